"""argparse types shared by the studies' commands: each turns a bad value into a usage error that
names it (exit status 2), before any work starts."""

import argparse


def bounded(convert, minimum, strict, word):
    """An argparse type: a number of `convert`'s kind, above (or from) `minimum`."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {word}: {text!r}") from None
        if value < minimum or (strict and value == minimum):
            relation = "above" if strict else "at least"
            raise argparse.ArgumentTypeError(f"must be {relation} {minimum}, got {text}")
        return value
    return parse


positive_float = bounded(float, 0, True, "a number")
positive_int = bounded(int, 1, False, "an integer")
non_negative_int = bounded(int, 0, False, "an integer")


def json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def chunk_spec(text: str):
    """An argparse type: 'I/N' (or 'I-of-N', Snakemake's scatter item), chunk I of N
    (xaibench.studies.chunks.Chunk); a bad one is a usage error naming it."""
    from xaibench.errors import ChunkError
    from xaibench.studies.chunks import Chunk

    try:
        return Chunk.parse(text)
    except ChunkError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
