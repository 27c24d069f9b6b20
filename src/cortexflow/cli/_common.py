"""Small pieces shared by the command-line modules."""

from __future__ import annotations

import click

__all__ = ["parse_sets"]


def parse_sets(values: tuple[str, ...], *, option: str = "--set") -> dict[str, str]:
    """Turn repeated ``KEY=VALUE`` options into a dict (values stay strings; the config checks them).

    Raises
    ------
    click.BadParameter
        An item without ``=``.
    """
    out = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out
