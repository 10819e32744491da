"""askdesk: ask questions of your news articles; every answer cites its sentence.

    from askdesk import Desk
    desk = Desk.build("corpus", "index")
    print(desk.ask("How big was Nippon Steel's bid for US Steel?").text)
"""

__version__ = "0.1.0"

from .config import Config  # noqa: E402
from .desk import Desk  # noqa: E402
from .errors import AskdeskError  # noqa: E402
from .types import Answer, Article, Citation  # noqa: E402

__all__ = ["Desk", "Config", "Answer", "Citation", "Article", "AskdeskError", "__version__"]
