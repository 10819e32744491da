"""Reading and answering: retrieval and fusion (retrieve), the sentence scores and the refusal
(answer), the trained reader's decisions (read), follow-ups (dialog), who said what (news), short
answers (short), written answers and their checks (generate, verify), and the order of the steps
`Desk.ask` runs (respond).

May import: store, articles, models, and the shared modules. Never Desk or surface.
"""
