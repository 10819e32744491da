"""`python app.py`: the askdesk chat page on http://127.0.0.1:7860 (the Hugging Face Spaces convention).

Serves `index/` (ASKDESK_INDEX), synced first with the article folder it records (or ASKDESK_CORPUS,
or `corpus/` for a new index). GRADIO_SERVER_NAME / GRADIO_SERVER_PORT choose the address;
ASKDESK_AUTH="user:password" asks for a login. The same page, with the same options, is `askdesk serve`.
"""

import sys
from pathlib import Path

try:
    from askdesk.surface.cli import main
except ImportError:  # a fresh clone before `pip install -e .`: use the source tree beside this file
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from askdesk.surface.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))  # the same options as `askdesk serve`
