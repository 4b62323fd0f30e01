"""ExplaiNN's rule search: batched candidate gains on the device, greedy MDL acceptance on the host.

References:
  Fischer, Oláh, Vreeken. What's in the Box? Exploring the Inner Life of Neural Networks with
  Robust Rules. ICML 2021. The encoding and search are reconstructed from the paper (see
  docs/rules.md for which choices are ours).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxplain.rules import _bits, _checkpoint, _codes, _kernel
from jaxplain.rules._binarize import layer_items
from jaxplain.rules._progress import NO_PROGRESS, search_progress
from jaxplain.rules._ruleset import Rule, RuleSet, _frozen


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Options of ``mine`` (defaults from the spec's reference design, §5).

    Attributes:
      pairs: allowed (head layer, tail layer) pairs; None = every earlier -> later layer in the
        mapping's order. They must form a DAG so that the code is decodable.
      tail_mode: "robust" (rows with >= k tail hits use the rule, zeros paid as noise) or
        "exact" (only rows with the whole tail).
      set_code: "universal" (L_N(k) + LB(m, k)) or "premise" (LB(m, k) + Reg(m)).
      min_head_support: ignore heads on fewer rows; None = max(2, ceil(0.001 n)).
      k_tail: tail items ranked per head (every prefix is scored); max_head: head size limit.
      tail_order: how the tail items are ranked: "confidence" (most uncovered ones in the
        head's rows first, the spec's) or "both" (also by the gain of the one-item rule
        X -> {y}; each head keeps the better of the two rankings' best prefixes, at twice the
        cost; docs/rules.md, "Two tail rankings").
      beam, k_head: head growth keeps the best ``beam`` candidates and tries ``k_head``
        extensions of each.
      max_rules: stop after this many rules; eps: accept only gains < -eps bits.
      min_tail_frac: floor on the usage threshold k as a fraction of |Y| (0: MDL decides).
      batch_size: candidates scored per device call (padded: one compilation per layer pair).
      tolerance: accepted gain vs. recomputed drop in total code length (bits), checked always.
      time_budget: stop after about this many seconds (None: no limit), checked before every
        device call; the rule being searched is dropped, the result says
        ``stopped_by="time_budget"`` and a ``RuntimeWarning`` is issued.
    """

    pairs: tuple | None = None
    tail_mode: str = "robust"
    set_code: str = "universal"
    min_head_support: int | None = None
    k_tail: int = 64
    tail_order: str = "confidence"
    max_head: int = 3
    beam: int = 256
    k_head: int = 16
    max_rules: int | None = None
    eps: float = 1e-9
    min_tail_frac: float = 0.0
    batch_size: int = 64
    tolerance: float = 1e-6
    time_budget: float | None = None


class _Candidate(NamedTuple):
    gain: float
    rule_bits: float
    head: tuple
    tail: tuple
    min_hits: int
    counts: tuple  # (support, usage, zeros) from the device

    def key(self):
        return (self.gain, self.rule_bits, self.head, self.tail)


class _OutOfTime(Exception):
    """Raised between device calls once ``time_budget`` has run out."""


class _Accepted(NamedTuple):
    pair: int
    head: tuple
    tail: tuple
    min_hits: int
    gain: float
    support: int
    usage: int
    confidence: float
    tail_bits: float
    rule_bits: float
    rows: np.ndarray  # usage rows (bool, n)


def mine(layers: Mapping[str, np.ndarray], *, labels=None, devices: Sequence | None = None,
         checkpoint_dir: str | None = None, callback: Callable | None = None,
         progress: bool = False, **options) -> RuleSet:
    """Mine rules ``X -> Y`` between layers that best compress binarized activations (MDL).

    Args:
      layers: layer name -> bool ``(n, d_layer)``, or -> the ``Binarized`` that ``binarize``
        returns (its ``items`` are mined), so the ``{site: Binarized}`` of ``activations``
        can be passed as it is; rows (samples) aligned across layers.
      labels: optional int ``(n,)`` classes; each rule then gets a class histogram of its rows.
      devices: devices to shard the rows over (None: all of ``jax.devices()``).
      checkpoint_dir: save accepted rules with orbax after each acceptance and resume from
        there if the directory already holds this search (one whose options differ only in
        ``max_rules``, ``time_budget``, ``batch_size`` or ``tolerance``); a damaged latest
        step falls back to the one before it, with a ``RuntimeWarning``. ``~`` is expanded;
        the directory is locked for the search, so one search at a time uses it.
      callback: called with each accepted ``Rule``.
      progress: show the search as it runs (tqdm, on stderr): a bar per search level (the
        heads of one size for one layer pair) counting the heads scored, kernel batch by
        kernel batch, with the best gain so far, and a line per accepted rule. A search at the
        spec's defaults can take many minutes per rule; this shows where it is. The rules are
        the same with and without.
      **options: fields of ``SearchConfig`` (pairs, tail_mode, k_tail, max_head, ...).

    Returns:
      A ``RuleSet`` with the rules in acceptance order and the code lengths in bits; its
      ``stopped_by`` says whether ``time_budget`` or ``max_rules`` ended the search early
      (``complete`` is False then; a ``RuntimeWarning`` is issued for ``time_budget``).

    Raises:
      TypeError: ``layers`` is not a mapping, or a layer is neither a ``Binarized`` nor one
        array.
      ValueError: fewer than two layers, non-boolean or non-2-D layers, different row counts,
        no rows, unknown options, an option of the wrong type or range (``k_tail=8.0``,
        ``eps=-1``), unknown layer pairs, a pair listed twice, pairs with a cycle, labels
        that are not non-negative ints; a ``checkpoint_dir`` that cannot be written or is in
        use by another process (both checked before the search), holds another search (the
        message names what differs) or has no readable step.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> conv, fc = rng.random((500, 8)) < 0.1, rng.random((500, 8)) < 0.1
      >>> fc[conv[:, 0], :4] = True                  # plant conv[0] -> fc[0..3]
      >>> rules = mine({"conv": conv, "fc": fc}, k_tail=8)
      >>> print(rules.rules[0])
      conv[0] -> fc[0,1,2,3]  support 56  usage 56/56  conf 1.00
    """
    config = _config(options)
    data, n = _validate(layers)
    pairs = _pairs(config.pairs, list(data))
    labels = _labels(labels, n)
    devices = list(jax.devices() if devices is None else devices)
    report = search_progress(progress)
    with jax.enable_x64(True), _checkpoint.claimed(checkpoint_dir) as checkpoint_dir:
        search = _Search(data, n, pairs, config, devices)
        search.report = report
        stamp = _checkpoint.fingerprint(
            # The unpadded data: a search may resume on another number of devices.
            [part for name, array in data.items() for part in (name, array.shape, array)],
            _result_options(config, pairs, search.min_support))
        if checkpoint_dir is not None:
            for pair, head, tail, min_hits, gain in _checkpoint.load(checkpoint_dir, stamp):
                search.accept(pair, head, tail, min_hits, gain, None)
        if config.time_budget is not None:
            search.deadline = time.monotonic() + config.time_budget
        try:
            return _greedy(search, config, checkpoint_dir, stamp, callback, labels)
        finally:
            report.close()


def _greedy(search, config, checkpoint_dir, stamp, callback, labels) -> RuleSet:
    """Accept the best candidate until none compresses (or a limit stops the search)."""
    stopped_by = None
    while True:
        if config.max_rules is not None and len(search.accepted) >= config.max_rules:
            stopped_by = "max_rules"
            break
        try:
            search.check_time()
            best = search.best_candidate()
        except _OutOfTime:
            # The candidate being searched is dropped: the accepted rules stay a prefix
            # of the unlimited search's (a checkpoint resumes it exactly).
            stopped_by = "time_budget"
            warnings.warn(
                f"mine stopped at time_budget={config.time_budget} s with "
                f"{len(search.accepted)} rules; more rules may compress (the RuleSet has "
                f"stopped_by='time_budget', complete=False). Raise time_budget, or pass "
                f"checkpoint_dir= to resume the search later.", RuntimeWarning,
                stacklevel=3)   # at mine's caller
            break
        if best is None or not best[1].gain < -config.eps:
            break
        pair, cand = best
        search.accept(pair, cand.head, cand.tail, cand.min_hits, cand.gain, cand.counts)
        if checkpoint_dir is not None:
            _checkpoint.save(checkpoint_dir, search.accepted, stamp, config.max_head,
                             search.max_tail)
        rule = search.rule(search.accepted[-1])
        search.report.accepted(len(search.accepted), rule,
                               100.0 * search.total / search.baseline)
        if callback is not None:
            callback(rule)
    return search.result(labels, stopped_by)


# Options that leave the rules as they are, so a resumed search may change them: the stopping
# criteria, the padding of device calls (each head is scored on its own; a test mines with
# several batch sizes) and the check's tolerance.
_RESUMABLE = ("max_rules", "time_budget", "batch_size", "tolerance")


def _result_options(config, pairs, min_support) -> dict:
    """The options a checkpoint must match, as resolved (``pairs=None`` = its explicit list,
    ``min_tail_frac=0`` = ``0.0``: a number given for a float option is that float)."""
    options = {}
    for field in dataclasses.fields(SearchConfig):
        value = getattr(config, field.name)
        if (isinstance(field.default, float) and isinstance(value, numbers.Real)
                and not isinstance(value, bool)):
            value = float(value)
        if field.name not in _RESUMABLE:
            options[field.name] = value
    return dict(options, pairs=pairs, min_head_support=min_support)


def _config(options) -> SearchConfig:
    names = {f.name for f in dataclasses.fields(SearchConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(f"mine got unknown option(s) {unknown}; expected some of {sorted(names)}")
    config = SearchConfig(**options)
    if config.tail_mode not in ("robust", "exact"):
        raise ValueError(f"tail_mode must be 'robust' or 'exact', got {config.tail_mode!r}")
    if config.set_code not in ("universal", "premise"):
        raise ValueError(f"set_code must be 'universal' or 'premise', got {config.set_code!r}")
    if config.tail_order not in ("confidence", "both"):
        raise ValueError(f"tail_order must be 'confidence' or 'both', got "
                         f"{config.tail_order!r}")
    _check_numbers(config)
    return config


# Numeric options: (kind, what is allowed, test); None is allowed where the default is None.
_NUMBERS = {
    "k_tail": (numbers.Integral, "an int >= 1", lambda v: v >= 1),
    "max_head": (numbers.Integral, "an int >= 1", lambda v: v >= 1),
    "beam": (numbers.Integral, "an int >= 1", lambda v: v >= 1),
    "k_head": (numbers.Integral, "an int >= 1", lambda v: v >= 1),
    "batch_size": (numbers.Integral, "an int >= 1", lambda v: v >= 1),
    "min_head_support": (numbers.Integral, "an int >= 1 or None", lambda v: v >= 1),
    "max_rules": (numbers.Integral, "an int >= 0 or None", lambda v: v >= 0),
    "eps": (numbers.Real, "a number >= 0 (finite)", lambda v: 0 <= v < math.inf),
    "tolerance": (numbers.Real, "a number >= 0 (finite)", lambda v: 0 <= v < math.inf),
    "min_tail_frac": (numbers.Real, "a number in [0, 1]", lambda v: 0 <= v <= 1),
    "time_budget": (numbers.Real, "a number >= 0 (seconds) or None", lambda v: v >= 0),
}


def _check_numbers(config):
    """ValueError naming a numeric option of the wrong type (``k_tail=8.0``, ``True``) or
    range (``eps=-1``, NaN)."""
    for name, (kind, allowed, ok) in _NUMBERS.items():
        value = getattr(config, name)
        if value is None and getattr(SearchConfig, name) is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind) or not ok(value):
            raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _validate(layers) -> tuple[dict, int]:
    if not isinstance(layers, Mapping):
        raise TypeError(f"layers must be a mapping name -> bool (n, d) array (or Binarized), "
                        f"got {type(layers).__name__}")
    if len(layers) < 2:
        raise ValueError(f"rules relate neurons of different layers: mine needs at least two "
                         f"layers, got {len(layers)} ({list(layers)})")
    data = {}
    for name, value in layers.items():
        array = layer_items(name, value)
        if array.dtype != np.bool_:
            numeric = np.issubdtype(array.dtype, np.number)
            if numeric and array.size and np.isin(array, (0, 1)).all():
                raise ValueError(f"layer {name!r} has dtype {array.dtype} with only 0/1 values: "
                                 f"pass layer.astype(bool)")
            raise ValueError(f"layer {name!r} must be boolean (binarize activations first with "
                             f"jaxplain.rules.binarize), got dtype {array.dtype}")
        if array.ndim != 2:
            raise ValueError(f"layer {name!r} must be 2-D (rows, neurons), got shape "
                             f"{array.shape}")
        data[str(name)] = array
    rows = {name: a.shape[0] for name, a in data.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(f"all layers must have the same number of rows (samples), got {rows}")
    n = next(iter(rows.values()))
    if n == 0 or any(a.shape[1] == 0 for a in data.values()):
        raise ValueError(f"mine got empty data: shapes {({k: a.shape for k, a in data.items()})}")
    return data, n


def _pairs(pairs, names) -> tuple:
    if pairs is None:
        return tuple((a, b) for i, a in enumerate(names) for b in names[i + 1:])
    pairs = tuple((str(a), str(b)) for a, b in pairs)
    twice = sorted({p for p in pairs if pairs.count(p) > 1})
    if twice:
        raise ValueError(f"pairs lists {twice} more than once; list each (head, tail) layer "
                         f"pair once (a pair listed twice would be searched twice and add "
                         f"log2 of the extra pairs to every rule's code)")
    for a, b in pairs:
        for layer in (a, b):
            if layer not in names:
                raise ValueError(f"pairs names unknown layer {layer!r}; layers are {names}")
        if a == b:
            raise ValueError(f"a rule's head and tail must be in different layers, got {(a, b)}")
    # Decodability: the layer graph of the pairs must be acyclic (Kahn's algorithm).
    edges = set(pairs)
    nodes = {x for p in edges for x in p}
    while nodes:
        sources = {x for x in nodes if not any(b == x and a in nodes for a, b in edges)}
        if not sources:
            raise ValueError(f"pairs {pairs} contain a cycle; rules must form a DAG over layers "
                             "or the code cannot be decoded")
        nodes -= sources
    return pairs


def _labels(labels, n):
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be non-negative ints of shape ({n},), got dtype "
                         f"{labels.dtype} and shape {labels.shape}")
    if labels.min() < 0:
        negative = np.flatnonzero(labels < 0)
        raise ValueError(f"labels must be non-negative class indices, got negative values in "
                         f"{negative.size} rows (e.g. {labels[negative[0]]} at row "
                         f"{negative[0]})")
    return labels


class _Search:
    """The search state: data on host and device, coverage, accepted rules."""

    def __init__(self, data, n, pairs, config, devices):
        self.n, self.pairs, self.config = n, pairs, config
        self.names = list(data)
        self.kept = {k: np.flatnonzero((a.sum(0) > 0) & (a.sum(0) < n)) for k, a in data.items()}
        self.dropped = tuple((k, tuple(int(i) for i in np.setdiff1d(np.arange(a.shape[1]),
                                                                     self.kept[k])))
                             for k, a in data.items())
        self.widths = tuple((k, a.shape[1]) for k, a in data.items())
        for k, a in data.items():
            if not self.kept[k].size:
                on = int(a[0].sum())
                warnings.warn(
                    f"every column of layer {k!r} is constant ({a.shape[1] - on} never on, {on} "
                    f"always on over the {n} rows): it is dropped and takes no part in any "
                    f"rule. Binarize it at a lower threshold (never on) or a higher one (always "
                    f"on).", UserWarning, stacklevel=3)   # at mine's caller
        self.data = {k: np.ascontiguousarray(a[:, self.kept[k]]) for k, a in data.items()}
        self.cover = {k: np.zeros_like(a) for k, a in self.data.items()}
        self.residual_counts = {k: a.sum(0).astype(np.int64) for k, a in self.data.items()}
        self.min_support = (max(2, math.ceil(0.001 * n)) if config.min_head_support is None
                            else int(config.min_head_support))
        mesh = Mesh(np.array(devices), ("rows",))
        self.rows_sharding = NamedSharding(mesh, PartitionSpec(None, "rows"))
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.words = _bits.num_words(n, len(devices))
        self.scan_words = len(devices) == 1 and devices[0].platform == "cpu"
        valid = _bits.pack(np.ones((n, 1), bool), self.words)
        packed = {k: _bits.pack(a, self.words) for k, a in self.data.items()}
        self.device_head = {k: self._put(np.concatenate([p, valid]), True)
                            for k, p in packed.items()}
        self.device_data = {k: self._put(p, True) for k, p in packed.items()}
        self.device_residual = dict(self.device_data)
        self.log2_fact = self._put(_codes.log2_factorial_table(n))
        self.regret_tab = self._put(_codes.regret_table())
        self.pair_bits = math.log2(len(pairs)) if pairs else 0.0
        self.max_tail = max(self.data[b].shape[1] for _, b in pairs) if pairs else 1
        self.accepted: list[_Accepted] = []
        self.deadline = None   # time.monotonic() at which the time_budget runs out
        self.report = NO_PROGRESS   # mine(progress=True) sets a SearchProgress
        self.baseline = math.fsum([_codes.universal(1)] + self._column_bits())
        self.total = self.baseline

    def check_time(self):
        """Raise ``_OutOfTime`` once the deadline has passed (checked before each device call,
        so a search overruns its budget by at most one call, or its first compilation)."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _OutOfTime

    def _put(self, array, rows=False):
        return jax.device_put(array, self.rows_sharding if rows else self.replicated)

    def _column_bits(self):
        reg = _codes.regret(self.n)
        return [_codes.log_binomial(self.n, int(c)) + reg
                for k in self.names for c in self.residual_counts[k]]

    def rule_bits(self, pair, head_size, tail_size):
        a, b = self.pairs[pair]
        kind = self.config.set_code
        return (self.pair_bits + _codes.set_code(self.data[a].shape[1], head_size, kind)
                + _codes.set_code(self.data[b].shape[1], tail_size, kind))

    # ------------------------------------------------------------------ candidates (device)
    def _batches(self, heads):
        size, width = self.config.batch_size, self.config.max_head
        for start in range(0, len(heads), size):
            chunk = heads[start:start + size]
            yield chunk, size, width

    def _pad_heads(self, chunk, size, width, pad):
        arr = np.full((size, width), pad, np.int32)
        for i, head in enumerate(chunk):
            arr[i, : len(head)] = head
        return arr

    def score(self, pair, heads: list) -> list:
        """Best rule (gain, tail, k) for each head set, scored in padded device batches."""
        a, b = self.pairs[pair]
        m_a, m_b = self.data[a].shape[1], self.data[b].shape[1]
        k_tail = min(self.config.k_tail, m_b)
        table = np.zeros((self.config.max_head + 1, k_tail + 1))
        for x in range(1, min(self.config.max_head, m_a) + 1):
            for y in range(1, k_tail + 1):
                table[x, y] = self.rule_bits(pair, x, y)
        new_rule = (_codes.universal(len(self.accepted) + 2)
                    - _codes.universal(len(self.accepted) + 1))
        consts = (self._put(table), self.log2_fact, self.regret_tab,
                  self._put(np.float64(new_rule)))
        residual_counts = self._put(self.residual_counts[b].astype(np.int32))

        def dispatch(batch):
            chunk, size, width = batch
            self.check_time()
            arr = self._pad_heads(chunk, size, width, m_a)
            sizes = np.array([len(h) for h in chunk] + [1] * (size - len(chunk)), np.int32)
            valid = np.arange(size) < len(chunk)
            return _kernel.score(self.device_head[a], self.device_data[b],
                                 self.device_residual[b], residual_counts, self._put(arr),
                                 self._put(sizes), self._put(valid), *consts,
                                 robust=self.config.tail_mode == "robust",
                                 min_support=self.min_support,
                                 min_tail_frac=float(self.config.min_tail_frac),
                                 scan_words=self.scan_words,
                                 tail_order=self.config.tail_order)

        out = []
        # The batches are fixed by ``heads``: batch i + 1 runs while batch i is read.
        for (chunk, _, _), res in _kernel.fetch_ahead(self._batches(heads), dispatch):
            res["gain"] = np.where(res["gain"] < _kernel.NO_RULE, res["gain"], np.inf)
            gains = res["gain"][: len(chunk)]
            self.report.scored(len(chunk), float(gains.min()) if len(chunk) else math.inf)
            for i, head in enumerate(chunk):
                size_y = int(res["size"][i])
                tail = tuple(sorted(int(y) for y in res["tail"][i, :size_y]))
                out.append(_Candidate(float(res["gain"][i]), float(table[len(head), size_y]),
                                      tuple(head), tail, int(res["min_hits"][i]),
                                      (int(res["support"][i]), int(res["usage"][i]),
                                       int(res["zeros"][i]))))
        return out

    def extensions(self, pair, parents: list) -> list:
        """For each parent head, the top ``k_head`` items x' by |T_{X + x'}| (ties: low index)."""
        a = self.pairs[pair][0]
        m_a = self.data[a].shape[1]

        def dispatch(batch):
            self.check_time()
            rows = _kernel.head_rows(self.device_head[a], self._put(self._pad_heads(*batch, m_a)))
            return _kernel.cooccurrence(rows, self.device_data[a])

        out = []
        batches = self._batches([p.head for p in parents])
        for (chunk, _, _), support in _kernel.fetch_ahead(batches, dispatch):
            for i, head in enumerate(chunk):
                s = support[i].astype(np.int64)
                s[list(head)] = -1
                order = np.argsort(-s, kind="stable")[: self.config.k_head]
                out.append([tuple(sorted(head + (int(x),))) for x in order
                            if s[x] >= self.min_support])
        return out

    def best_for_pair(self, pair):
        a = self.pairs[pair][0]
        freq = self.data[a].sum(0)
        seeds = [(int(x),) for x in np.flatnonzero(freq >= self.min_support)]
        rule = len(self.accepted) + 1
        self.report.level(rule, self.pairs[pair], 1, len(seeds))
        pool = [c for c in self.score(pair, seeds) if np.isfinite(c.gain)]
        parents, seen = sorted(pool, key=_Candidate.key)[: self.config.beam], set(seeds)
        for size in range(2, self.config.max_head + 1):
            if not parents:
                break
            children, owner = [], []
            for parent, heads in zip(parents, self.extensions(pair, parents)):
                for head in heads:
                    if head not in seen:
                        seen.add(head)
                        children.append(head)
                        owner.append(parent)
            self.report.level(rule, self.pairs[pair], size, len(children))
            scored = self.score(pair, children)
            improved = [c for c, p in zip(scored, owner) if c.gain < p.gain]
            pool += improved
            parents = sorted(improved, key=_Candidate.key)[: self.config.beam]
        return min(pool, key=_Candidate.key) if pool else None

    def best_candidate(self):
        best = None
        for pair in range(len(self.pairs)):
            if min(self.data[layer].shape[1] for layer in self.pairs[pair]) == 0:
                continue
            cand = self.best_for_pair(pair)
            if cand is not None and (best is None or cand.key() < best[1].key()):
                best = (pair, cand)
        return best

    # ------------------------------------------------------------------ acceptance (host)
    def accept(self, pair, head, tail, min_hits, gain, device_counts):
        """Add a rule, update coverage, and check the gain against a from-scratch recount."""
        a, b = self.pairs[pair]
        head_rows = self.data[a][:, list(head)].all(axis=1)
        tail_data = self.data[b][:, list(tail)]
        hits = tail_data.sum(axis=1)
        if self.config.tail_mode == "exact":
            min_hits = len(tail)
        rows = head_rows & (hits >= min_hits)
        support, usage = int(head_rows.sum()), int(rows.sum())
        zeros = int((len(tail) - hits[rows]).sum())
        if device_counts is not None and device_counts != (support, usage, zeros):
            raise AssertionError(f"device counts {device_counts} != host counts "
                                 f"{(support, usage, zeros)} for rule {head} -> {tail}")
        tail_bits = _codes.log_binomial(support, usage) + _codes.regret(support)
        if self.config.tail_mode == "robust":
            block = usage * len(tail)
            tail_bits += _codes.log_binomial(block, zeros) + _codes.regret(block)
        self.cover[b][np.ix_(rows, np.asarray(tail))] = True
        self.residual_counts[b] = (self.data[b] & ~self.cover[b]).sum(0).astype(np.int64)
        confidence = float(tail_data[head_rows].mean()) if support else 0.0
        self.accepted.append(_Accepted(pair, tuple(head), tuple(tail), int(min_hits), gain,
                                       support, usage, confidence, tail_bits,
                                       self.rule_bits(pair, len(head), len(tail)), rows))
        total = self.total_code_length()
        if not abs(total - (self.total + gain)) <= self.config.tolerance:
            raise AssertionError(f"accepted gain {gain!r} bits != real change "
                                 f"{total - self.total!r} bits for rule {head} -> {tail}")
        self.total = total
        residual = _bits.pack(self.data[b] & ~self.cover[b], self.words)
        self.device_residual[b] = self._put(residual, True)

    def total_code_length(self) -> float:
        """L(D, M) recomputed from the coverage and the accepted rules (float64, fsum)."""
        terms = [_codes.universal(len(self.accepted) + 1)]
        terms += [r.rule_bits + r.tail_bits for r in self.accepted]
        return math.fsum(terms + self._column_bits())

    # ------------------------------------------------------------------ result
    def rule(self, acc: _Accepted) -> Rule:
        a, b = self.pairs[acc.pair]
        return Rule(head=_frozen(sorted(self.kept[a][list(acc.head)]), np.int32),
                    tail=_frozen(sorted(self.kept[b][list(acc.tail)]), np.int32),
                    support=_frozen(acc.support, np.int64), usage=_frozen(acc.usage, np.int64),
                    min_hits=_frozen(acc.min_hits, np.int32),
                    confidence=_frozen(acc.confidence, np.float64),
                    gain=_frozen(acc.gain, np.float64), head_layer=a, tail_layer=b)

    def result(self, labels, stopped_by=None) -> RuleSet:
        hist = None
        if labels is not None:
            classes = int(labels.max()) + 1
            hist = _frozen([np.bincount(labels[r.rows], minlength=classes)
                            for r in self.accepted] or np.zeros((0, classes)), np.int64)
        return RuleSet(rules=tuple(self.rule(r) for r in self.accepted),
                       code_length=_frozen(self.total, np.float64),
                       baseline_code_length=_frozen(self.baseline, np.float64),
                       class_histograms=hist, dropped=self.dropped, widths=self.widths,
                       num_rows=self.n, stopped_by=stopped_by)
