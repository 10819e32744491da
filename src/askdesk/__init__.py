"""askdesk: ask questions of your news articles; every answer cites its sentence.

    from askdesk import Desk
    desk = Desk.build("corpus", "index")
    print(desk.ask("How big was Nippon Steel's bid for US Steel?").text)
"""

from typing import TYPE_CHECKING

from .config import Config
from .errors import AskdeskError
from .types import Answer, Article, Citation
from .version import __version__

if TYPE_CHECKING:
    from .desk import Desk

__all__ = ["Desk", "Config", "Answer", "Citation", "Article", "AskdeskError", "__version__"]


def __getattr__(name: str):
    # Desk is imported on first use: it brings numpy and the whole pipeline, which `askdesk --help`
    # and `import askdesk` do not need (measured in docs/benchmarks.md).
    if name == "Desk":
        from .desk import Desk

        globals()["Desk"] = Desk
        return Desk
    raise AttributeError(f"module 'askdesk' has no attribute {name!r}")
