"""The app's layer: everything the Gradio page means, in plain Python (app.py lays out the widgets and
translates): the form's fields and the run's config, the model menu, per-browser sessions and a public
Space's caps, a run as a person watches it, and the before/after views. Nothing here imports gradio."""
