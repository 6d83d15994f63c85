"""Placing boxes, routing edges, sizing frames: top to bottom, no two boxes overlapping, every edge starting and
ending on the boxes it joins.

Networks written in cnndsl are series-parallel: chains, and branches that fork from one box and merge into
another (res, cat, add, mul, split). So the layout first decomposes the box graph into a series-parallel tree
by the classic reductions (a box with one edge in and one out joins the edges around it into a series;
two edges between the same boxes become a parallel). A series stacks its boxes on one axis; a parallel puts
its branches side by side: centred under the fork when branches are alike (Inception), or with the fork,
the longest branch and the merge on one straight axis and the others beside it when one branch dominates
(a residual's body, its skip drawn as a line in a lane of its own beside the column, entering the merge from
the side). A branch never shares columns with another, so no edge crosses a box.

A graph that is not series-parallel (an imported ONNX model may be anything) gets a layered (Sugiyama)
layout instead: longest-path layers, long edges broken by dummy points, barycentre ordering and positions
balanced by isotonic regression (pool adjacent violators) under the spacing constraints.
"""
from __future__ import annotations

from collections import deque
from typing import Optional

GAP = 30.0          # vertical space between a box and the next
HGAP = 28.0         # horizontal space between branches
LGAP = 20.0         # from a column to a lane (a skip edge)
LABEL_INSET = 10.0  # a frame's label from its left side
PORT_MARGIN = 10.0  # edges leave and enter a box at least this far from its corners
PORT_SPACING = 9.0
FRAME_PAD = (12.0, 8.0)      # per frame level: padding around the contents
FRAME_HEAD = (20.0, 17.0)    # per frame level: room for the label above the contents


class Geometry:
    """Boxes (x, y, w, h) per item, edges [(src, dst, [(x, y), ...], skip)], frame rectangles, the extent."""

    def __init__(self, boxes: list, edges: list, frames: list, method: str):
        self.boxes, self.edges, self.frames, self.method = boxes, edges, frames, method
        self.width = self.height = 0.0
        self._normalise()

    def _normalise(self) -> None:
        xs = [b[0] for b in self.boxes] + [f[1][0] for f in self.frames] + \
            [p[0] for _, _, pts, _ in self.edges for p in pts]
        ys = [b[1] for b in self.boxes] + [f[1][1] for f in self.frames]
        x2 = [b[0] + b[2] for b in self.boxes] + [f[1][0] + f[1][2] for f in self.frames] + \
            [p[0] for _, _, pts, _ in self.edges for p in pts]
        y2 = [b[1] + b[3] for b in self.boxes] + [f[1][1] + f[1][3] for f in self.frames]
        self.shift(-min(xs), -min(ys))
        self.width, self.height = max(x2) - min(xs), max(y2) - min(ys)

    def shift(self, dx: float, dy: float) -> None:
        self.boxes = [(x + dx, y + dy, w, h) for x, y, w, h in self.boxes]
        self.edges = [(a, b, [(x + dx, y + dy) for x, y in pts], skip) for a, b, pts, skip in self.edges]
        self.frames = [(f, (x + dx, y + dy, w, h)) for f, (x, y, w, h) in self.frames]


def margins(diagram) -> tuple[list, list]:
    """Room each item needs above and below it for the frames it opens and closes."""
    items = diagram.items
    preds = [[] for _ in items]
    succs = [[] for _ in items]
    for a, b, _ in diagram.edges:
        succs[a].append(b)
        preds[b].append(a)
    top = [0.0] * len(items)
    bottom = [0.0] * len(items)
    for it in items:
        for level, fid in enumerate(it.frames):
            lv = min(level, len(FRAME_PAD) - 1)
            if not any(fid in items[p].frames for p in preds[it.index]):
                top[it.index] += FRAME_HEAD[lv] + FRAME_PAD[lv]
            if not any(fid in items[s].frames for s in succs[it.index]):
                bottom[it.index] += FRAME_PAD[lv]
    return top, bottom


def layout(diagram, box_w: float, box_h: float, label_widths: Optional[dict] = None) -> Geometry:
    """Place the diagram's boxes (all box_w x box_h), route its edges, size its frames (label_widths: frame id ->
    the width its label needs)."""
    n = len(diagram.items)
    top, bottom = margins(diagram)
    rank = {(a, b): r for a, b, r in diagram.edges}
    placed = None
    if n >= 2:
        tree = _sp_tree(n, [(a, b) for a, b, _ in diagram.edges], 0, n - 1)
        if tree is not None:
            try:
                placed = _SeriesParallel(n, tree, rank, top, bottom, box_w, box_h).run()
                method = "series-parallel"
            except RecursionError:        # nested too deeply for the recursive layout
                placed = None
    if placed is None:
        placed = _layered(diagram, top, bottom, box_w, box_h)
        method = "layered"
    boxes, edges = placed
    frames = _frame_rects(diagram, boxes, edges, label_widths or {})
    return Geometry(boxes, edges, frames, method)


# --------------------------------------------------- series-parallel tree --

class _Leaf:
    __slots__ = ("u", "v", "lane", "side", "l", "r", "h")

    def __init__(self, u: int, v: int):
        self.u, self.v = u, v
        self.lane, self.side = 0.0, False


class _S:
    __slots__ = ("items", "l", "r", "h")     # items: tree, vertex, tree, ..., vertex, tree

    def __init__(self, items: deque):
        self.items = items


class _P:
    __slots__ = ("kids", "offsets", "l", "r", "h")

    def __init__(self, kids: list):
        self.kids = kids


def _series(t1, w: int, t2):
    if isinstance(t1, _S) and isinstance(t2, _S):
        if len(t1.items) >= len(t2.items):
            t1.items.append(w)
            t1.items.extend(t2.items)
            return t1
        t2.items.appendleft(w)
        t2.items.extendleft(reversed(t1.items))
        return t2
    if isinstance(t1, _S):
        t1.items.append(w)
        t1.items.append(t2)
        return t1
    if isinstance(t2, _S):
        t2.items.appendleft(w)
        t2.items.appendleft(t1)
        return t2
    return _S(deque((t1, w, t2)))


def _parallel(t1, t2):
    a = t1.kids if isinstance(t1, _P) else [t1]
    b = t2.kids if isinstance(t2, _P) else [t2]
    if len(a) < len(b):
        a, b = b, a
    return _P(a + b)


def _sp_tree(n: int, edges: list, src: int, dst: int):
    """The series-parallel decomposition tree between src and dst, or None when the graph is not one."""
    out = [dict() for _ in range(n)]
    inn = [dict() for _ in range(n)]
    for a, b in edges:
        leaf = _Leaf(a, b)
        out[a][b] = leaf
        inn[b][a] = leaf
    stack = list(range(n - 1, -1, -1))
    while stack:
        w = stack.pop()
        if w == src or w == dst or len(inn[w]) != 1 or len(out[w]) != 1:
            continue
        (u, t1), = inn[w].items()
        (v, t2), = out[w].items()
        del out[u][w], inn[v][w]
        inn[w].clear()
        out[w].clear()
        t = _series(t1, w, t2)
        if v in out[u]:
            t = _parallel(out[u][v], t)
        out[u][v] = t
        inn[v][u] = t
        stack.append(v)
        stack.append(u)
    if len(out[src]) != 1 or dst not in out[src] or sum(len(o) for o in out) != 1:
        return None
    return out[src][dst]


class _SeriesParallel:
    def __init__(self, n: int, tree, rank: dict, top: list, bottom: list, box_w: float, box_h: float):
        self.n, self.tree, self.rank, self.top, self.bottom = n, tree, rank, top, bottom
        self.w, self.h = box_w, box_h
        self.pos = [None] * n
        self.leaves: list = []

    def run(self):
        root = _S(deque((self.tree,)))
        root.items.appendleft(0)
        root.items.appendleft(None)
        root.items.append(self.n - 1)
        root.items.append(None)
        self._measure_s(root, None, None)
        self._place_s(root, 0.0, 0.0)
        return self._route()

    # -- sizes, bottom up
    def _measure(self, t, u, v) -> None:
        if isinstance(t, _Leaf):
            t.l = t.r = 0.0
            t.h = GAP
        elif isinstance(t, _S):
            self._measure_s(t, u, v)
        else:
            self._measure_p(t, u, v)

    def _measure_s(self, t: _S, u, v) -> None:
        items = t.items = list(t.items)       # a deque while reducing; indexed from here on
        h, half = 0.0, self.w / 2
        l = r = half
        for k, el in enumerate(items):
            if k % 2:
                h += self.top[el] + self.h + self.bottom[el]
            elif el is not None:
                self._measure(el, u if k == 0 else items[k - 1], v if k == len(items) - 1 else items[k + 1])
                h += el.h
                l, r = max(l, el.l), max(r, el.r)
        t.l, t.r, t.h = l, r, h

    def _ends(self, t, u) -> set:
        """The vertices of branch t (starting at u) that enter its merge directly."""
        while isinstance(t, _S):
            u, t = t.items[-2], t.items[-1]
        if isinstance(t, _Leaf):
            return {u}
        out: set = set()
        for k in t.kids:
            out |= self._ends(k, u)
        return out

    def _measure_p(self, t: _P, u: int, v: int) -> None:
        for k in t.kids:
            self._measure(k, u, v)
            if isinstance(k, _Leaf):
                k.l = k.r = 0.0
        big = (1 << 62,)
        t.kids.sort(key=lambda k: min((self.rank.get((x, v), big) for x in self._ends(k, u)), default=big))
        heights = sorted((0.0 if isinstance(k, _Leaf) else k.h for k in t.kids), reverse=True)
        kids = t.kids
        gaps = [HGAP if not (isinstance(a, _Leaf) or isinstance(b, _Leaf)) else LGAP
                for a, b in zip(kids, kids[1:])]
        offsets = [0.0] * len(kids)
        if heights[0] >= 2 * heights[1]:       # one branch dominates: it stays on the axis, skips right of it
            m = max(range(len(kids)), key=lambda i: (0.0 if isinstance(kids[i], _Leaf) else kids[i].h, -i))
            main = kids[m]
            leaves = [k for k in kids if isinstance(k, _Leaf)]
            kids = [k for k in kids[:m] if not isinstance(k, _Leaf)] + [main] + leaves + \
                [k for k in kids[m + 1:] if not isinstance(k, _Leaf)]
            t.kids = kids
            m = kids.index(main)
            gaps = [HGAP if not (isinstance(a, _Leaf) or isinstance(b, _Leaf)) else LGAP
                    for a, b in zip(kids, kids[1:])]
            x = kids[m].r
            for i in range(m + 1, len(kids)):
                x += gaps[i - 1]
                offsets[i] = x + kids[i].l
                x = offsets[i] + kids[i].r
            x = -kids[m].l
            for i in range(m - 1, -1, -1):
                x -= gaps[i]
                offsets[i] = x - kids[i].r
                x = offsets[i] - kids[i].l
        else:                                   # alike branches: centred under the fork
            total = sum(k.l + k.r for k in kids) + sum(gaps)
            x = -total / 2
            for i, k in enumerate(kids):
                offsets[i] = x + k.l
                x = offsets[i] + k.r + (gaps[i] if i < len(gaps) else 0.0)
        t.offsets = offsets
        t.l = max(k.l - o for k, o in zip(kids, offsets))
        t.r = max(k.r + o for k, o in zip(kids, offsets))
        t.h = max(max(k.h for k in kids), GAP)

    # -- positions, top down
    def _place(self, t, axis: float, y0: float) -> None:
        if isinstance(t, _Leaf):
            t.lane, t.side = axis, False
            self.leaves.append(t)
        elif isinstance(t, _S):
            self._place_s(t, axis, y0)
        else:
            for k, dx in zip(t.kids, t.offsets):
                if isinstance(k, _Leaf):
                    k.lane, k.side = axis + dx, True
                    self.leaves.append(k)
                else:
                    self._place(k, axis + dx, y0)

    def _place_s(self, t: _S, axis: float, y0: float) -> None:
        y = y0
        for k, el in enumerate(t.items):
            if k % 2:
                y += self.top[el]
                self.pos[el] = (axis - self.w / 2, y)
                y += self.h + self.bottom[el]
            elif el is not None:
                self._place(el, axis, y)
                y += el.h

    # -- edges
    def _route(self):
        w, h = self.w, self.h
        boxes = [(x, y, w, h) for x, y in self.pos]
        # a skip lane leaves its fork from the side, and enters its merge from the side, where it is the only
        # edge to use that side of that box (an entry wins over an exit: DenseNet's chained concats)
        side_out: dict = {}
        side_in: dict = {}
        for e in self.leaves:
            if e.side:
                bu, bv = boxes[e.u], boxes[e.v]
                if not bu[0] <= e.lane <= bu[0] + w:
                    side_out.setdefault((e.u, e.lane > bu[0]), []).append(e)
                if not bv[0] <= e.lane <= bv[0] + w:
                    side_in.setdefault((e.v, e.lane > bv[0]), []).append(e)
        out_ports: dict = {}
        in_ports: dict = {}
        plan = []
        for e in self.leaves:
            bu, bv = boxes[e.u], boxes[e.v]
            s_in = e.side and len(side_in.get((e.v, e.lane > bv[0]), ())) == 1 and \
                not bv[0] <= e.lane <= bv[0] + w
            s_out = e.side and len(side_out.get((e.u, e.lane > bu[0]), ())) == 1 and \
                not bu[0] <= e.lane <= bu[0] + w and (e.u, e.lane > bu[0]) not in side_in
            if not s_out:
                out_ports.setdefault(e.u, []).append(e)
            if not s_in:
                in_ports.setdefault(e.v, []).append(e)
            plan.append((e, s_out, s_in))
        px_out, turn_out = self._assign(out_ports, boxes)
        px_in, turn_in = self._assign(in_ports, boxes)
        edges = []
        for e, s_out, s_in in plan:
            bu, bv = boxes[e.u], boxes[e.v]
            L = e.lane
            pts = []
            if s_out:
                cy = bu[1] + h / 2
                pts += [(bu[0] + w if L > bu[0] else bu[0], cy), (L, cy)]
            else:
                pu = px_out[id(e)]
                ya = bu[1] + h + self.bottom[e.u] + GAP / 2 - turn_out[id(e)]    # outer lanes turn first
                pts += [(pu, bu[1] + h), (pu, ya), (L, ya)]
            if s_in:
                cy = bv[1] + h / 2
                pts += [(L, cy), (bv[0] + w if L > bv[0] else bv[0], cy)]
            else:
                pv = px_in[id(e)]
                yb = bv[1] - self.top[e.v] - GAP / 2 + turn_in[id(e)]            # outer lanes turn last
                pts += [(L, yb), (pv, yb), (pv, bv[1])]
            edges.append((e.u, e.v, _simplify(pts), e.side))
        edges.sort(key=lambda t: (t[1], t[0]))
        return boxes, edges

    @staticmethod
    def _assign(groups: dict, boxes: list) -> tuple[dict, dict]:
        """Ports on a box side for its edges, and how far (in px, from the gap's middle) each turns towards its
        lane: the edge to the outermost lane nearest the box, so that turns nest and no two run together."""
        port, turn = {}, {}
        for b, es in groups.items():
            xs = _ports(boxes[b], [e.lane for e in es])
            for e, x in zip(es, xs):
                port[id(e)] = x
                turn[id(e)] = 0.0
            left = sorted((e for e in es if e.lane < port[id(e)] - 0.5), key=lambda e: e.lane)
            right = sorted((e for e in es if e.lane > port[id(e)] + 0.5), key=lambda e: -e.lane)
            for side in (left, right):
                m = len(side)
                step = min(5.0, (GAP - 10) / (m - 1)) if m > 1 else 0.0
                for j, e in enumerate(side):
                    turn[id(e)] = ((m - 1) / 2 - j) * step
        return port, turn


def _ports(box: tuple, lanes: list) -> list:
    """Where edges heading for `lanes` leave (or enter) a box's bottom (top) side: right above (below) their lane
    when the lane passes under (over) the box; edges heading further out spread evenly over the side's part
    towards their lanes; all at least a few px apart and off the corners."""
    x, _, w, _ = box
    lo, hi = x + PORT_MARGIN, x + w - PORT_MARGIN
    k = len(lanes)
    order = sorted(range(k), key=lambda i: (lanes[i], i))
    inner = [lanes[i] for i in order if lo <= lanes[i] <= hi]
    left = [i for i in order if lanes[i] < lo]
    right = [i for i in order if lanes[i] > hi]
    mid = x + w / 2
    desired = {}
    a = (min(inner) if inner else (mid if right else hi + PORT_SPACING)) - PORT_SPACING
    for j, i in enumerate(left):
        desired[i] = lo + (max(a, lo) - lo) * ((j + 0.5) / len(left) if inner or right else
                                                 (j / (len(left) - 1) if len(left) > 1 else 0.5))
    b = (max(inner) if inner else (mid if left else lo - PORT_SPACING)) + PORT_SPACING
    for j, i in enumerate(right):
        desired[i] = min(b, hi) + (hi - min(b, hi)) * ((j + 0.5) / len(right) if inner or left else
                                                       (j / (len(right) - 1) if len(right) > 1 else 0.5))
    for i in order:
        if i not in desired:
            desired[i] = lanes[i]
    spacing = min(PORT_SPACING, (hi - lo) / (k - 1)) if k > 1 else 0.0
    xs = _isotonic([desired[i] for i in order], [spacing] * (k - 1))
    shift = 0.0
    if xs and xs[0] < lo:
        shift = lo - xs[0]
    elif xs and xs[-1] > hi:
        shift = hi - xs[-1]
    out = [0.0] * k
    for j, i in enumerate(order):
        out[i] = min(hi, max(lo, xs[j] + shift))
    return out


def _simplify(pts: list) -> list:
    out: list = []
    for p in pts:
        p = (round(p[0], 2), round(p[1], 2))
        if out and abs(out[-1][0] - p[0]) < 1e-6 and abs(out[-1][1] - p[1]) < 1e-6:
            continue
        if len(out) >= 2:
            a, b = out[-2], out[-1]
            if (abs(a[0] - b[0]) < 1e-6 and abs(b[0] - p[0]) < 1e-6) or \
                    (abs(a[1] - b[1]) < 1e-6 and abs(b[1] - p[1]) < 1e-6):
                if (b[0] - a[0]) * (p[0] - b[0]) >= 0 and (b[1] - a[1]) * (p[1] - b[1]) >= 0:
                    out[-1] = p
                    continue
        out.append(p)
    return out


def _isotonic(desired: list, gaps: list) -> list:
    """x minimising sum (x_i - desired_i)^2 with x_{i+1} >= x_i + gaps_i: pool adjacent violators."""
    k = len(desired)
    if k == 0:
        return []
    offset = [0.0] * k
    for i in range(1, k):
        offset[i] = offset[i - 1] + gaps[i - 1]
    blocks: list = []           # [sum, count]
    for i in range(k):
        blocks.append([desired[i] - offset[i], 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    out = []
    for s, c in blocks:
        out.extend([s / c] * c)
    return [y + o for y, o in zip(out, offset)]


# ------------------------------------------------------------- layered --

def _layered(diagram, top: list, bottom: list, box_w: float, box_h: float):
    items = diagram.items
    n = len(items)
    preds = [[] for _ in range(n)]
    for a, b, _ in diagram.edges:
        preds[b].append(a)
    layer = [0] * n
    floor = highest = 0
    for i, it in enumerate(items):
        band = it.frames[0] if it.frames else None
        if i and band != (items[i - 1].frames[0] if items[i - 1].frames else None):
            floor = highest + 1
        layer[i] = max([floor] + [layer[p] + 1 for p in preds[i]]) if i else 0
        highest = max(highest, layer[i])
    # dummies: vertex ids n.. ; each edge becomes a chain of vertices one layer apart
    width = [box_w] * n
    lay = list(layer)
    up: list = [[] for _ in range(n)]
    down: list = [[] for _ in range(n)]
    chains = []
    for a, b, _ in diagram.edges:
        chain = [a]
        for L in range(layer[a] + 1, layer[b]):
            d = len(lay)
            lay.append(L)
            width.append(0.0)
            up.append([])
            down.append([])
            chain.append(d)
        chain.append(b)
        for x, y in zip(chain, chain[1:]):
            down[x].append(y)
            up[y].append(x)
        chains.append((a, b, chain))
    rows: list = [[] for _ in range(highest + 1)]
    for v, L in enumerate(lay):
        rows[L].append(v)
    place = [0.0] * len(lay)

    def renumber(row):
        for i, v in enumerate(row):
            place[v] = float(i)

    for row in rows:
        renumber(row)
    for sweep in range(8):                   # barycentre ordering, down and up
        order = range(1, len(rows)) if sweep % 2 == 0 else range(len(rows) - 2, -1, -1)
        for L in order:
            nb = up if sweep % 2 == 0 else down
            row = rows[L]
            key = {v: (sum(place[u] for u in nb[v]) / len(nb[v]) if nb[v] else place[v]) for v in row}
            row.sort(key=lambda v: (key[v], place[v]))
            renumber(row)

    def gaps(row):
        return [(width[a] + width[b]) / 2 + (HGAP if width[a] and width[b] else LGAP / 2)
                for a, b in zip(row, row[1:])]

    x = [0.0] * len(lay)
    for row in rows:
        xs = _isotonic([0.0] * len(row), gaps(row))
        for v, xv in zip(row, xs):
            x[v] = xv
    for sweep in range(10):                  # balance: each vertex towards its neighbours' mean
        both = sweep == 9
        order = range(len(rows)) if sweep % 2 == 0 else range(len(rows) - 1, -1, -1)
        for L in order:
            row = rows[L]
            want = []
            for v in row:
                nb = (up[v] + down[v]) if both else (up[v] if sweep % 2 == 0 else down[v])
                want.append(sum(x[u] for u in nb) / len(nb) if nb else x[v])
            for v, xv in zip(row, _isotonic(want, gaps(row))):
                x[v] = xv
    # rows to y
    row_top = [0.0] * len(rows)
    y = 0.0
    for L, row in enumerate(rows):
        real = [v for v in row if v < n]
        y += max((top[v] for v in real), default=0.0)
        row_top[L] = y
        y += box_h + max((bottom[v] for v in real), default=0.0) + GAP
    boxes = [(x[i] - box_w / 2, row_top[layer[i]], box_w, box_h) for i in range(n)]
    outs: dict = {}
    ins: dict = {}
    for k, (a, b, chain) in enumerate(chains):
        outs.setdefault(a, []).append((x[chain[1]], k))
        ins.setdefault(b, []).append((x[chain[-2]], k))
    port_out, port_in = {}, {}
    for a, lst in outs.items():
        for (_, k), px in zip(lst, _ports(boxes[a], [t for t, _ in lst])):
            port_out[k] = px
    for b, lst in ins.items():
        for (_, k), px in zip(lst, _ports(boxes[b], [t for t, _ in lst])):
            port_in[k] = px
    edges = []
    for k, (a, b, chain) in enumerate(chains):
        pts = [(port_out[k], boxes[a][1] + box_h)]
        for d in chain[1:-1]:
            pts += [(x[d], row_top[lay[d]]), (x[d], row_top[lay[d]] + box_h)]
        pts.append((port_in[k], boxes[b][1]))
        edges.append((a, b, _simplify(pts), len(chain) > 2))
    edges.sort(key=lambda t: (t[1], t[0]))
    return boxes, edges


# -------------------------------------------------------------- frames --

def _frame_rects(diagram, boxes: list, edges: list, label_widths: dict) -> list:
    """Each frame's rectangle: its boxes, nested frames and the edges into it, padded, with room for its label
    at the top left, left of every edge that crosses the frame's top (the frame widens, both sides alike,
    where the label would not fit).
    A frame that would overlap a box outside it or another frame beside it is left out (with its inner
    frames): it cannot happen for a network written in cnndsl, whose stages and blocks follow one another."""
    import bisect
    items = diagram.items
    parent = {f.id: (items[f.items[0]].frames[f.level - 1] if f.level else None) for f in diagram.frames}
    extent: dict = {}
    for f in diagram.frames:
        ext = extent[f.id] = [float("inf"), float("inf"), float("-inf"), float("-inf")]
        for i in f.items:
            bx, by, bw, bh = boxes[i]
            ext[0], ext[1] = min(ext[0], bx), min(ext[1], by)
            ext[2], ext[3] = max(ext[2], bx + bw), max(ext[3], by + bh)
    for a, b, pts, _ in edges:          # an edge into a frame widens it (a skip lane beside the column)
        xs = [p[0] for p in pts]
        for fid in items[b].frames:
            ext = extent[fid]
            ext[0], ext[2] = min(ext[0], min(xs)), max(ext[2], max(xs))
    entering: dict = {}
    for a, b, pts, _ in edges:
        for fid in items[b].frames:
            entering.setdefault(fid, []).append(pts)
    rects: dict = {}
    for f in sorted(diagram.frames, key=lambda f: -f.level):       # inner frames first
        ext = extent[f.id]
        lv = min(f.level, len(FRAME_PAD) - 1)
        pad, head = FRAME_PAD[lv], FRAME_HEAD[lv]
        r = (ext[0] - pad, ext[1] - pad - head, ext[2] - ext[0] + 2 * pad, ext[3] - ext[1] + 2 * pad + head)
        need = label_widths.get(f.id, 0.0)
        if need:
            band = (r[1], r[1] + pad + head)
            crossing = [min(p[0], q[0]) for pts in entering.get(f.id, ()) for p, q in zip(pts, pts[1:])
                        if min(p[1], q[1]) < band[1] and max(p[1], q[1]) > band[0]]
            limit = min(crossing) - 6 if crossing else r[0] + r[2] - LABEL_INSET
            short = r[0] + LABEL_INSET + need - limit
            if short > 0:
                r = (r[0] - short, r[1], r[2] + 2 * short, r[3])
        rects[f.id] = r
        up = parent[f.id]
        if up is not None:
            pe = extent[up]
            pe[0], pe[1] = min(pe[0], r[0]), min(pe[1], r[1])
            pe[2], pe[3] = max(pe[2], r[0] + r[2]), max(pe[3], r[1] + r[3])
    tops = sorted((b[1], i) for i, b in enumerate(boxes))
    top_list = [t for t, _ in tops]
    tallest = max((b[3] for b in boxes), default=0.0)
    dropped: set = set()
    for f in sorted(diagram.frames, key=lambda f: f.level):
        if parent[f.id] in dropped:
            dropped.add(f.id)
            continue
        r = rects[f.id]
        members = set(f.items)
        lo = bisect.bisect_left(top_list, r[1] - tallest)
        hi = bisect.bisect_right(top_list, r[1] + r[3])
        if any(i not in members and _overlap(r, boxes[i]) for _, i in tops[lo:hi]):
            dropped.add(f.id)
    groups: dict = {}
    for f in diagram.frames:
        if f.id not in dropped:
            groups.setdefault((f.level, parent[f.id]), []).append(f)
    for group in groups.values():       # frames side by side: a sweep from the top
        active: list = []
        for f in sorted(group, key=lambda f: (rects[f.id][1], f.id)):
            r = rects[f.id]
            active = [g for g in active if rects[g.id][1] + rects[g.id][3] > r[1]]
            if any(_overlap(r, rects[g.id]) for g in active):
                dropped.add(f.id)
                continue
            active.append(f)
    out = []
    for f in diagram.frames:
        if f.id in dropped or parent[f.id] in dropped:
            continue
        out.append((f, rects[f.id]))
    return out


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _contains(a: tuple, b: tuple) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and a[0] + a[2] >= b[0] + b[2] and a[1] + a[3] >= b[1] + b[3]
