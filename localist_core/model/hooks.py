"""Hooks that write, with TransformerLens's semantics (docs/design.md, "Interventions").

A forward hook is a pair ``(name_or_predicate, fn)``: ``name_or_predicate`` is a hook name
(``blocks.0.attn.hook_pattern``) or a function of a name that returns True for the hooks it
wants; ``fn(activation, hook)`` returns a replacement of the same shape, dtype and device, or
None to keep the activation. ``hook`` is the ``HookPoint`` itself, and ``hook.name`` its name.
``attached`` registers them for the length of a ``with`` and removes every one on the way out,
an exception included.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

from torch import Tensor, nn

from .attention import HookPoint

HookFn = Callable[[Tensor, HookPoint], "Tensor | None"]
# More hooks than this in one call is a mistake (a model has tens of hook points, and one
# function per point is enough); it is refused before anything is registered.
MAX_FWD_HOOKS = 4096


class HookReplacementError(ValueError):
    """A hook function returned something that cannot stand in for the activation."""


def name_hook_points(model: nn.Module) -> None:
    """Give every ``HookPoint`` of ``model`` its module path as ``.name``."""
    for name, mod in model.named_modules():
        if isinstance(mod, HookPoint):
            mod.name = name


def resolve_hooks(model: nn.Module, fwd_hooks: Sequence) -> list[tuple[HookPoint, HookFn]]:
    """``(hook point, fn)`` for every hook point each ``(name_or_predicate, fn)`` selects, in
    the order given. An unknown name, a non-callable ``fn`` or a malformed entry raises a
    ValueError that says which."""
    if isinstance(fwd_hooks, (str, bytes)) or not isinstance(fwd_hooks, (list, tuple)):
        raise ValueError("fwd_hooks must be a list of (name or predicate, fn) pairs, got "
                         f"{type(fwd_hooks).__name__}")
    if len(fwd_hooks) > MAX_FWD_HOOKS:
        raise ValueError(f"{len(fwd_hooks):,} forward hooks; at most {MAX_FWD_HOOKS:,}")
    name_hook_points(model)
    points = {name: mod for name, mod in model.named_modules() if isinstance(mod, HookPoint)}
    out = []
    for i, entry in enumerate(fwd_hooks):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ValueError(f"fwd_hooks[{i}] must be a (name or predicate, fn) pair, got "
                             f"{entry!r:.80}")
        which, fn = entry
        if not callable(fn):
            raise ValueError(f"fwd_hooks[{i}]: the hook function is not callable: {fn!r:.80}")
        if isinstance(which, str):
            if which not in points:
                raise ValueError(f"fwd_hooks[{i}]: no hook named {which!r:.120}; the names are "
                                 f"model.hook_names(), e.g. {next(iter(points), '')!r}")
            out.append((points[which], fn))
        elif callable(which):
            out += [(mod, fn) for name, mod in points.items() if which(name)]
        else:
            raise ValueError(f"fwd_hooks[{i}]: a hook is chosen by its name or by a predicate "
                             f"on names, got {which!r:.80}")
    return out


def check_replacement(name: str, activation: Tensor, new) -> Tensor:
    """``new`` when it can replace ``activation`` at hook ``name``; a HookReplacementError
    otherwise (a replacement of another shape would be broadcast or fail far downstream)."""
    if not isinstance(new, Tensor):
        raise HookReplacementError(f"the hook on {name} returned a {type(new).__name__}; return "
                                   f"a tensor of shape {tuple(activation.shape)} or None")
    if new.shape != activation.shape:
        raise HookReplacementError(f"the hook on {name} returned shape {tuple(new.shape)}; the "
                                   f"activation is {tuple(activation.shape)}")
    if new.dtype != activation.dtype:
        raise HookReplacementError(f"the hook on {name} returned dtype {new.dtype}; the "
                                   f"activation is {activation.dtype}")
    if new.device != activation.device:
        raise HookReplacementError(f"the hook on {name} returned a tensor on {new.device}; the "
                                   f"activation is on {activation.device}")
    return new


@contextlib.contextmanager
def attached(model: nn.Module, fwd_hooks: Sequence) -> Iterator[None]:
    """Register ``fwd_hooks`` on ``model``'s hook points while inside; all are removed on the
    way out, also when a hook or the forward pass raises. A hook acts only in the thread that
    attached it, so a forward pass in another thread never meets it."""
    resolved = resolve_hooks(model, fwd_hooks)
    owner = threading.get_ident()
    handles = []

    def wrap(point: HookPoint, fn: HookFn):
        def hook(_mod, _inputs, activation):
            if threading.get_ident() != owner:
                return None
            new = fn(activation, point)
            return None if new is None else check_replacement(point.name, activation, new)
        return hook

    try:
        for point, fn in resolved:
            handles.append(point.register_forward_hook(wrap(point, fn)))
        yield
    finally:
        for h in handles:
            h.remove()
