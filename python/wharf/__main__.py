"""Entry point of `wharf` and `python -m wharf`: the command line is parsed by the Rust core."""

import sys


def main() -> None:
    from wharf._wharf import run

    sys.exit(run(["wharf", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
