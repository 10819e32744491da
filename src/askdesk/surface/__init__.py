"""The ways in: the command line (cli), the Gradio page (ui, its uploads and arrivals) and what both
render (render), and the measurements on third-party data (eval).

May import everything below it: Desk, answering, store, articles, models.
"""
