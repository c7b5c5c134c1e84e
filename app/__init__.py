"""The Gradio app (see issue 6)."""
