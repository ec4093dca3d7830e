"""Small, comment-preserving edits of the store's tomlkit document.

Each function changes only the keys it is about, in place, so a person's
comments, blank lines and key order around them survive. Values passed as
``None`` delete the key (that is how "unset" is written).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import tomlkit
from tomlkit import TOMLDocument
from tomlkit.container import OutOfOrderTableProxy
from tomlkit.items import AoT, Array, InlineTable, Table


def _super(doc: TOMLDocument, key: str) -> Table | OutOfOrderTableProxy:
    """A top-level table whose own ``[key]`` header is never printed (a proxy when its sub-tables are apart
    in the file: it has no ``add``, so new sub-tables go in by item assignment)."""
    if key not in doc:
        doc.add(key, tomlkit.table(is_super_table=True))
    table: Table | OutOfOrderTableProxy = doc[key]  # tomlkit types item access as Any
    return table


def _new_table() -> Table:
    """A fresh table that ends with a blank line, so sections stay apart."""
    t = tomlkit.table()
    t.trivia.indent = "\n"
    return t


def _child(parent: TOMLDocument | Table, key: str) -> Table:
    if key not in parent:
        parent.add(key, tomlkit.table())
    table: Table = parent[key]  # tomlkit types item access as Any
    return table


def _apply(table: Table | OutOfOrderTableProxy, fields: Mapping[str, Any]) -> None:
    for key, value in fields.items():
        if value is None:
            if key in table:
                del table[key]
        else:
            table[key] = value


def inline(mapping: Mapping[str, Any]) -> InlineTable:
    t = tomlkit.inline_table()
    t.update(dict(mapping))
    return t


# --- sources -------------------------------------------------------------


def put_source(doc: TOMLDocument, name: str, fields: Mapping[str, Any]) -> None:
    sources = _super(doc, "sources")
    if name not in sources:
        sources[name] = _new_table()
    table = sources[name]
    if isinstance(table, OutOfOrderTableProxy):
        # its sub-tables ([sources.NAME.models], .failover) sit apart from it in the file: they stay where
        # they are, and the keys go to the source's own table
        _apply(table, fields)
        return
    # keep "models" (a sub-table) last so new scalar keys land above it
    models = table.pop("models") if "models" in table else None
    _apply(table, fields)
    if models is not None:
        table.add("models", models)


def remove_source(doc: TOMLDocument, name: str) -> None:
    del doc["sources"][name]
    if not doc["sources"]:
        del doc["sources"]


def set_models(doc: TOMLDocument, source: str, models: Mapping[str, bool]) -> None:
    """Make the source's models table equal ``models``, editing in place."""
    table = doc["sources"][source]
    if "models" not in table:
        if isinstance(table, OutOfOrderTableProxy):  # its sub-tables sit apart in the file: no add() there
            table["models"] = tomlkit.table()
        else:
            table.add("models", tomlkit.table())
    current = table["models"]
    for model_id in [k for k in current if k not in models]:
        del current[model_id]
    for model_id, enabled in models.items():
        if model_id not in current or bool(current[model_id]) != enabled:
            current[model_id] = enabled


# --- settings ------------------------------------------------------------


def set_setting(doc: TOMLDocument, key: str, value: Any) -> None:
    settings = _child(doc, "settings")
    _apply(settings, {key: value})
    if not settings:
        del doc["settings"]


# --- catalog -------------------------------------------------------------


def put_entry(
    doc: TOMLDocument,
    ref: str,
    fields: Mapping[str, Any],
    prices: Mapping[str, str | None] = {},
    capabilities: Mapping[str, bool | None] = {},
) -> None:
    catalog = _super(doc, "catalog")
    if ref not in catalog:
        catalog[ref] = _new_table()
    table = catalog[ref]
    subs = {k: table.pop(k) for k in ("prices", "capabilities", "price_sets") if k in table}
    _apply(table, fields)
    for key in ("prices", "capabilities", "price_sets"):
        if key in subs:
            table.add(key, subs[key])
    if prices:
        _apply(_child(table, "prices"), prices)
        if not table["prices"]:
            del table["prices"]
    if capabilities:
        _apply(_child(table, "capabilities"), capabilities)
        if not table["capabilities"]:
            del table["capabilities"]


def put_price_set(
    doc: TOMLDocument, ref: str, valid_from: str, prices: Mapping[str, str], same: int | None, before: int | None = None
) -> None:
    """Write the dated price set starting at ``valid_from`` (ISO text with ``Z``) with exactly ``prices``:
    the set at index ``same`` of the entry's ``price_sets`` is updated in place (its comments kept), else a
    new one is inserted before the set at index ``before`` (to keep the sets in time order) or appended.
    The entry must exist."""
    table = _super(doc, "catalog")[ref]
    if "price_sets" not in table:
        table.add("price_sets", tomlkit.aot())
    sets: AoT = table["price_sets"]
    inserted = False
    if same is None:
        item = tomlkit.table()
        item.add("valid_from", tomlkit.datetime(valid_from))
        if before is not None and before < len(sets):
            sets.insert(before, item)
            item = sets[before]
            inserted = True
        else:
            if len(sets):
                item.trivia.indent = "\n"  # a blank line between the sets, as between other sections
            sets.append(item)
            item = sets[-1]
    else:
        item = sets[same]
    for kind in [k for k in item if k != "valid_from" and k not in prices]:
        del item[kind]
    for kind, text in prices.items():
        item[kind] = text
    if inserted:
        item.add(tomlkit.nl())  # a blank line before the set that now follows, as between other sections


def replace_entry(doc: TOMLDocument, ref: str, data: Mapping[str, Any]) -> None:
    """Write an entry from plain data (import), keeping an existing table's comments where keys survive."""
    catalog = _super(doc, "catalog")
    if ref in catalog:
        table = catalog[ref]
        for key in [k for k in table if k not in data]:
            del table[key]
    scalars = {k: v for k, v in data.items() if k not in ("prices", "capabilities", "price_sets")}
    if "supported_params" in scalars and scalars["supported_params"] is not None:
        scalars["supported_params"] = list(scalars["supported_params"])
    put_entry(doc, ref, scalars)
    table = catalog[ref]
    for key in ("prices", "capabilities"):
        wanted = data.get(key) or {}
        if key in table:
            sub = table[key]
            for k in [k for k in sub if k not in wanted]:
                del sub[k]
            if not wanted:
                del table[key]
        if wanted:
            _apply(_child(table, key), wanted)
    if "price_sets" in table:
        del table["price_sets"]
    for item in data.get("price_sets") or ():
        put_price_set(doc, ref, str(item["valid_from"]), {k: v for k, v in item.items() if k != "valid_from"}, None)


def remove_entry(doc: TOMLDocument, ref: str) -> None:
    del doc["catalog"][ref]
    if not doc["catalog"]:
        del doc["catalog"]


# --- routes --------------------------------------------------------------


def _routes(doc: TOMLDocument) -> AoT:
    if "routes" not in doc:
        doc.add("routes", tomlkit.aot())
    routes: AoT = doc["routes"]  # tomlkit types item access as Any
    return routes


def balance_value(targets: Sequence[tuple[str, int]]) -> Array:
    """A route's ``balance`` as written: one line of inline tables, ``[{target = "S/M", weight = 2}, ...]``
    (a plain list of dicts would become ``[[routes.balance]]`` tables)."""
    out = tomlkit.array()
    for ref, weight in targets:
        out.append(inline({"target": ref, "weight": weight}))
    return out


def put_route(doc: TOMLDocument, index: int | None, fields: Mapping[str, Any]) -> None:
    """Replace route ``index`` in place, or append a new one when ``index`` is None."""
    routes = _routes(doc)
    if index is None:
        table = _new_table()
        _apply(table, fields)
        routes.append(table)
    else:
        _apply(routes[index], fields)


def remove_route(doc: TOMLDocument, index: int) -> None:
    routes = doc["routes"]
    del routes[index]
    if len(routes) == 0:
        del doc["routes"]


# --- keys ----------------------------------------------------------------


def put_key(doc: TOMLDocument, name: str, fields: Mapping[str, Any]) -> None:
    keys = _super(doc, "keys")
    if name not in keys:
        keys[name] = _new_table()
    _apply(keys[name], fields)


def remove_key(doc: TOMLDocument, name: str) -> None:
    del doc["keys"][name]
    if not doc["keys"]:
        del doc["keys"]


# --- limits ----------------------------------------------------------------


def _limits(doc: TOMLDocument) -> AoT:
    if "limits" not in doc:
        doc.add("limits", tomlkit.aot())
    limits: AoT = doc["limits"]  # tomlkit types item access as Any
    return limits


def put_limit(doc: TOMLDocument, target: str, fields: Mapping[str, Any]) -> None:
    """Set the fields of the ``[[limits]]`` table for ``target`` (appended when there is none)."""
    limits = _limits(doc)
    for table in limits:
        if table.get("target") == target:
            _apply(table, fields)
            return
    table = _new_table()
    _apply(table, {"target": target, **fields})
    limits.append(table)


def remove_limit(doc: TOMLDocument, target: str) -> bool:
    """Remove ``target``'s limit; False when it has none."""
    if "limits" not in doc:
        return False
    limits = doc["limits"]
    for index, table in enumerate(limits):
        if table.get("target") == target:
            del limits[index]
            if len(limits) == 0:
                del doc["limits"]
            return True
    return False
