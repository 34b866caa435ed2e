"""What to tell a user whose command line Hydra refused: the closest valid key.

Hydra's own message for ``dlkit-train optimizer.lrr=0.1`` says that ``lrr`` "is not in
struct" and how to add it, but not which key the user meant. :func:`override_hint`
reproduces the failure in-process and answers that. It runs only after Hydra has already
refused the command line, so a good command line never pays for it.

Example::

    $ dlkit-train optimizer.lrr=0.1
    Could not override 'optimizer.lrr'.
    ...
    dlkit: there is no config key 'optimizer.lrr'. Did you mean optimizer.lr?
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig

from dlkit.config import compose_config

__all__ = ["close_keys", "config_keys", "hint_on_unknown_keys", "override_hint"]

# Hydra's messages for an override of a key the composed config lacks.
_UNKNOWN_KEY = re.compile(r"Could not override '(?P<set>[^']+)'|Could not delete from config\. '(?P<delete>[^']+)' does not")
# Overrides refused one by one, so a command line with several wrong keys hears of each.
_MAX_REFUSED = 5


def config_keys(cfg: DictConfig, prefix: str = "") -> Iterator[str]:
    """Every dotted key of ``cfg`` down to its leaves (not into lists), ``hydra`` left out.

    Args:
        cfg: A composed config.
        prefix: Prepended to every key (used for the recursion).

    Yields:
        ``"optimizer"``, ``"optimizer.lr"``, ... in the config's order.

    Example:
        >>> from omegaconf import OmegaConf
        >>> list(config_keys(OmegaConf.create({"a": {"b": 1}, "c": [1, 2]})))
        ['a', 'a.b', 'c']
    """
    for key in cfg.keys():
        if not prefix and key == "hydra":
            continue
        name = f"{prefix}{key}"
        yield name
        value = cfg._get_node(key)  # the node itself: no interpolation is resolved on the way
        if isinstance(value, DictConfig) and not value._is_missing() and not value._is_none():
            yield from config_keys(value, f"{name}.")


def close_keys(key: str, keys: Sequence[str], n: int = 3) -> list[str]:
    """The keys most like ``key``: its leaf among its siblings, then the same leaf elsewhere.

    Args:
        key: The dotted key that does not exist, e.g. ``"optimizer.lrr"``.
        keys: The keys that do (see :func:`config_keys`).
        n: At most this many suggestions.

    Returns:
        Up to ``n`` existing keys, the most similar first; empty when nothing is close.

    Example:
        >>> close_keys("optimizer.lrr", ["optimizer", "optimizer.lr", "trainer.max_epochs"])
        ['optimizer.lr']
    """
    existing = set(keys)
    parent, _, leaf = key.rpartition(".")
    # A misspelt parent (`trainr.max_epochs`) is corrected first, then the leaf under it.
    parents = [parent] if not parent or parent in existing else close_keys(parent, keys, n)
    near: list[str] = []
    for p in parents:
        prefix = f"{p}." if p else ""
        children = {k[len(prefix):]: k for k in keys if k.startswith(prefix) and "." not in k[len(prefix):]}
        if leaf in children:
            near.append(children[leaf])
            continue
        near += [children[m] for m in difflib.get_close_matches(leaf, list(children), n=n, cutoff=0.6)]
    # The leaf under another parent: `trainer.lr` was meant to be `optimizer.lr`.
    near += [k for k in keys if k.rpartition(".")[2] == leaf and k != key]
    return list(dict.fromkeys(near))[:n]


def _one_value_each(args: Sequence[str]) -> list[str] | None:
    """The overrides with every sweep (``a=1,2``, ``interval(...)``) cut to one value; flags dropped."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(plain)
    except Exception:  # a syntax error: Hydra's own message says where
        return None
    out = []
    for text, override in zip(plain, parsed):
        if override.is_sweep_override():
            try:
                first = next(iter(override.sweep_string_iterator()))
            except Exception:  # interval(), a sweeper's search space: any number stands in
                first = "0"
            text = f"{override.get_key_element()}={first}"
        out.append(text)
    return out


def override_hint(args: Sequence[str], config_name: str = "train") -> str | None:
    """Which existing keys the unknown keys on a command line were probably meant to be.

    Args:
        args: The command line after the program name (Hydra flags such as ``-m`` are ignored).
        config_name: ``"train"`` (``dlkit-train``) or ``"eval"`` (``dlkit-eval``).

    Returns:
        One line per unknown key with its closest valid keys, or ``None`` when the
        command line composes or fails for another reason (Hydra's message is then enough).

    Example:
        >>> print(override_hint(["optimizer.lrr=0.1"]))
        dlkit: there is no config key 'optimizer.lrr'. Did you mean optimizer.lr? ...
    """
    from hydra.errors import ConfigCompositionException

    overrides = _one_value_each(args)
    if overrides is None:
        return None
    refused: list[tuple[str, bool]] = []  # (key, whether it was set rather than deleted)
    cfg: DictConfig | None = None
    for _ in range(_MAX_REFUSED + 1):
        try:
            cfg = compose_config(config_name, overrides)
            break
        except ConfigCompositionException as err:
            found = _UNKNOWN_KEY.search(_messages(err))
            if not found:
                return None
            key = found.group("set") or found.group("delete")
            refused.append((key, bool(found.group("set"))))
            overrides = [o for o in overrides if o.lstrip("+~").split("@")[0].partition("=")[0] != key]
        except Exception:
            return None
    if cfg is None or not refused:
        return None
    keys = list(config_keys(cfg))
    lines = []
    for key, was_set in refused:
        near = close_keys(key, keys)
        guess = f" Did you mean {' or '.join(near)}?" if near else ""
        add = f"; +{key}=... adds a new one" if was_set else ""
        lines.append(f"dlkit: there is no config key '{key}'.{guess} `dlkit-{config_name} --cfg job` "
                     f"(without it) prints every key{add}.")
    return "\n".join(lines)


def _messages(err: BaseException) -> str:
    """The message of ``err`` and of the errors it was raised from."""
    parts: list[str] = []
    seen: Any = err
    while seen is not None and len(parts) < 5:
        parts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@contextmanager
def hint_on_unknown_keys(args: Sequence[str], config_name: str = "train") -> Iterator[None]:
    """Around a Hydra entry point: when it exits with an error, print :func:`override_hint`'s lines.

    Hydra prints its own message and exits with status 1 (``SystemExit``); the hint is
    printed under it, on stderr, and the exit goes on unchanged.

    Args:
        args: The command line after the program name.
        config_name: ``"train"`` or ``"eval"``.

    Example::

        with hint_on_unknown_keys(sys.argv[1:], "train"):
            _hydra_main()
    """
    try:
        yield
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            hint = override_hint(args, config_name)
            if hint:
                print(hint, file=sys.stderr)
        raise
