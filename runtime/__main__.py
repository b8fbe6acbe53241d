"""`python -m runtime demo|bench ...`: the streaming applications on top of the device core."""
from __future__ import annotations

import sys
from typing import List, Optional

from runtime.errors import run_cli

COMMANDS = {
    "demo": "stream a source through the model and show, write or serve the result",
    "bench": "latency of every model (stage breakdown, percentiles) and streaming FPS",
}


def usage() -> str:
    lines = ["usage: python -m runtime {demo,bench} [options]   (--help after a command for its options)", ""]
    lines += [f"  {name:<6} {text}" for name, text in COMMANDS.items()]
    lines += ["", "examples:",
              "  python -m runtime demo --serve 8090 --loop      # watch the synthetic video at http://127.0.0.1:8090/",
              "  python -m runtime demo --source video.mp4 --output out.mp4 --save-masks masks/",
              "  python -m runtime bench --streaming",
              "  python -m runtime demo --help                   # every option, with its default"]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = args[0], args[1:]
    if command == "demo":
        from runtime.app.demo import main as command_main
    elif command == "bench":
        from runtime.app.bench import main as command_main
    else:
        print(f"error: unknown command {command!r}\n{usage()}", file=sys.stderr)
        return 2
    return run_cli(command_main, rest)


if __name__ == "__main__":
    raise SystemExit(main())
