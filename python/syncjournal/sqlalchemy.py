"""SQLAlchemy integration: ORM sessions whose flushes go through the journal.

A :class:`JournaledSession` is an ordinary ``Session`` on the cache database, except that
``flush()`` (and so ``commit()`` and autoflush) turns the session's pending work --
``session.add(obj)``, attribute changes, ``session.delete(obj)`` -- into **one change set per
flush**, applied through the store: durable in the journal, applied to the cache, replayed to
the target. Reads go to the cache as usual. The cache is never written around the journal:
its guard triggers stay, and a plain ``sessionmaker`` on the cache file fails to write.

::

    from syncjournal.sqlalchemy import sessionmaker

    Session = sessionmaker(store)                 # reads through the store's connection
    with Session() as session:
        session.add(Host(id=7, name="web-7"))
        session.commit()                          # one change set, durable
        print(session.last_lsn)                   # its LSN: store.wait_synced(session.last_lsn)

What a flush maps, and how:

* primary keys come from the mapper (composite keys included); every new object needs its
  key before the flush -- set it, or give the column a Python-side ``default=`` -- because
  the journal names each row by its key (a database-generated autoincrement key would not be
  known to the journal). Changing a persistent object's primary key is refused.
* column values go through the column types' bind processors for SQLite, so the cache holds
  what SQLAlchemy itself would have written (``DateTime`` as ISO text, ``Boolean`` as 0/1).
* Python-side ``default=`` and ``onupdate=`` (scalars, and callables taking no argument or the
  context, given ``None``) are applied; server defaults are left to the database.
* many-to-one and one-to-many relationships set the foreign-key columns as the unit of work
  would; a child removed from a ``delete-orphan`` collection is deleted. Many-to-many
  relationships (a ``secondary`` table) are refused: map the association table as a class.
* inserts and updates are ordered parents first (the metadata's dependency order), deletes
  children first; a row deleted and re-added in one flush is deleted first.
* a flush the store refuses (or that cannot be mapped) raises and rolls the session back.
* **a flush is a commit point**: when ``flush()`` returns, the change set is durable in the
  journal, and a later ``rollback()`` does not undo it (loaded objects are expired and reload
  from the cache).

ORM-enabled bulk statements (``session.execute(update(Host)...)``, ``bulk_save_objects``) emit
SQL, which the cache refuses: use objects, or ``store.apply``.

Reads run on the store's own read-only connection (:func:`cache_engine`, through
:mod:`syncjournal.dbapi`): in the store's process, a ``sqlite3`` connection to the cache is a
second copy of SQLite whose locks the store's cannot see (see :mod:`syncjournal.dbapi`). One
statement reads at a time; ``REGEXP`` is not available.

The finalisation of a flush uses the two ``Session`` methods that SQLAlchemy's own unit of work
calls for it (``_register_persistent``, ``_remove_newly_deleted``); tested with SQLAlchemy 2.1.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.orm import exc as orm_exc
from sqlalchemy.orm.interfaces import MANYTOONE, ONETOMANY

from . import _native, dbapi
from ._store import Store

__all__ = ["JournaledSession", "sessionmaker", "cache_engine", "schema_sql"]


def schema_sql(metadata: sa.MetaData) -> str:
    """The DDL of ``metadata``'s tables and indexes for SQLite, idempotent (``IF NOT
    EXISTS``): pass it as ``Store(..., schema=...)`` (and as ``target_schema``).

    Date and time columns are declared ``DATETIME TEXT``, ``DATE TEXT``, ``TIME TEXT``:
    SQLAlchemy stores them in SQLite as ISO text, and syncjournal accepts text only in columns
    of text affinity (a plain ``DATETIME`` has numeric affinity)."""
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    dialect = sqlite.dialect()
    copy = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(copy)
    for table in copy.tables.values():
        for column in table.columns:
            for kind, name in ((sa.DateTime, "DATETIME"), (sa.Date, "DATE"), (sa.Time, "TIME")):
                if isinstance(column.type, kind):
                    column.type = _TextAffinity(name)
                    break
    parts = []
    for table in copy.sorted_tables:
        parts.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)).strip())
        for index in table.indexes:
            parts.append(str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect)).strip())
    return ";\n".join(parts) + ";\n"


class _TextAffinity(sa.types.UserDefinedType):
    """A column type declared ``<NAME> TEXT`` (text affinity), for DDL only."""

    cache_ok = True

    def __init__(self, name: str) -> None:
        self.name = name

    def get_col_spec(self, **kw: Any) -> str:
        return f"{self.name} TEXT"


def cache_engine(store: Store, **kwargs: Any) -> sa.engine.Engine:
    """An engine that reads the store's cache through the store's own read-only connection
    (:mod:`syncjournal.dbapi`; not through Python's ``sqlite3``, whose copy of SQLite would not
    see the store's locks), for the sessions of :func:`sessionmaker` and for reading. Writes
    through it fail. ``kwargs`` go to ``sqlalchemy.create_engine``."""
    kwargs.setdefault("poolclass", sa.pool.NullPool)
    return sa.create_engine(
        sa.engine.URL.create("sqlite", database=store.cache_path),
        module=dbapi,
        creator=lambda: dbapi.connect(store),
        **kwargs,
    )


def sessionmaker(
    store: Store, bind: Optional[Any] = None, **kwargs: Any
) -> "orm.sessionmaker[JournaledSession]":
    """A ``sessionmaker`` of :class:`JournaledSession` bound to ``bind`` (default: a new
    :func:`cache_engine` of ``store``). ``kwargs`` go to ``sqlalchemy.orm.sessionmaker``."""
    if bind is None:
        bind = cache_engine(store)
    return orm.sessionmaker(bind=bind, class_=JournaledSession, store=store, **kwargs)


_NO_VALUE = object()


class JournaledSession(orm.Session):
    """A ``Session`` whose flushes are applied through a syncjournal store (see the module
    documentation). Takes ``store=`` besides the usual ``Session`` arguments."""

    #: The LSN of the last change set this session applied (None: none yet).
    last_lsn: Optional[int]

    def __init__(self, *args: Any, store: Store, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(store, _native.Store):
            raise TypeError(f"store must be a syncjournal.Store, not {type(store).__name__}")
        self.store = store
        self.last_lsn = None
        self._committing = False
        self._processors: Dict[Any, Any] = {}

    def flush(self, objects: Optional[Sequence[Any]] = None) -> None:
        """Applies the session's pending work as one change set through the store. Raises
        (and rolls the session back) if the store refuses it."""
        if objects is not None:
            raise NotImplementedError("a journaled session flushes all pending work at once")
        if self._flushing:
            raise sa.exc.InvalidRequestError("Session is already flushing")
        if not (self.new or self.deleted or self.dirty):
            return
        self._flushing = True
        failed = False
        try:
            # A subtransaction, as SQLAlchemy's own flush opens: on failure it rolls back the
            # session's transaction (and commit(), if committing, finishes the rollback).
            flush_tx = self._autobegin_t()._begin()
            try:
                with self.no_autoflush:
                    plan = _Plan(self)
                    changes = plan.change_set()
                lsn = self.store.apply(changes) if len(changes) else None
                _mark_flushed(self, plan.saved, plan.deleted, plan.unloaded)
            except BaseException:
                failed = True
                with sa.util.safe_reraise():
                    flush_tx.rollback(_capture_exception=True)
            flush_tx.commit()
            if lsn is not None:
                self.last_lsn = lsn
        finally:
            self._flushing = False
            if failed and not self._committing:
                self.rollback()

    def commit(self) -> None:
        """Flushes what is pending (one change set) and ends the session's transaction."""
        self._committing = True
        try:
            super().commit()
        except BaseException:
            self._committing = False
            if self.in_transaction():
                self.rollback()
            raise
        finally:
            self._committing = False

    def _db_value(self, column: sa.Column, value: Any) -> Any:
        """``value`` as SQLAlchemy would bind it for ``column`` on SQLite."""
        if value is None:
            return None
        key = column.type
        try:
            proc = self._processors[key]
        except (KeyError, TypeError):
            dialect = self.get_bind().dialect
            proc = column.type.dialect_impl(dialect).bind_processor(dialect)
            try:
                self._processors[key] = proc
            except TypeError:
                pass
        value = proc(value) if proc is not None else value
        # LargeBinary binds a memoryview (sqlite3.Binary): the store takes bytes.
        return bytes(value) if isinstance(value, memoryview) else value


def _call_default(default: Any) -> Any:
    """The value of a Python-side column default or onupdate (scalar or callable)."""
    if default.is_scalar:
        return default.arg
    if default.is_callable:
        # SQLAlchemy wraps a callable of no argument into one taking the execution context;
        # there is none here (no statement runs).
        return default.arg(None)
    return _NO_VALUE  # server-side (sequence, SQL expression): left to the database


def _describe(obj: Any) -> str:
    state = sa.inspect(obj)
    return f"{type(obj).__name__}{tuple(state.identity) if state.identity else ''}"


class _Plan:
    """One flush: the objects' changes turned into ordered mutations."""

    def __init__(self, session: JournaledSession) -> None:
        self.session = session
        self._ranks: Dict[Any, Dict[Any, int]] = {}
        new = list(session.new)
        for obj in new:
            self._apply_defaults(obj)
        self._sync_relationships(new + list(session.dirty))
        new = list(session.new)
        deleted = list(session.deleted)
        gone = set(map(id, deleted))
        dirty = [o for o in session.dirty if id(o) not in gone and o not in session.new]
        self.saved: Set[Any] = set()
        self.deleted: Set[Any] = set()
        self.unloaded: List[Tuple[Any, List[str]]] = []
        self.inserts: List[Tuple[int, dict]] = []
        self.updates: List[Tuple[int, dict]] = []
        self.deletes: List[Tuple[int, dict]] = []
        for obj in new:
            self._insert(obj)
        for obj in dirty:
            self._update(obj)
        for obj in deleted:
            self._delete(obj)

    # -- relationships ---------------------------------------------------------------

    def _set_column(self, obj: Any, column: sa.Column, value: Any) -> None:
        mapper = sa.inspect(obj).mapper
        prop = mapper.get_property_by_column(column)
        if getattr(obj, prop.key) != value:
            setattr(obj, prop.key, value)

    def _get_column(self, obj: Any, column: sa.Column) -> Any:
        mapper = sa.inspect(obj).mapper
        return getattr(obj, mapper.get_property_by_column(column).key)

    def _sync_relationships(self, objs: List[Any]) -> None:
        """Sets foreign-key columns from relationships, as the unit of work would."""
        for obj in objs:
            state = sa.inspect(obj)
            for prop in state.mapper.relationships:
                hist = state.attrs[prop.key].history
                if not hist.has_changes() and not (state.pending and hist.unchanged):
                    continue
                if prop.secondary is not None:
                    raise orm_exc.FlushError(
                        f"{_describe(obj)}.{prop.key}: many-to-many relationships are not "
                        "journaled; map the association table as a class"
                    )
                if prop.direction is MANYTOONE:
                    current = list(hist.added or ()) + list(hist.unchanged or ())
                    parent = current[0] if current else None
                    for remote, local in prop.synchronize_pairs:
                        value = None if parent is None else self._get_column(parent, remote)
                        self._set_column(obj, local, value)
                elif prop.direction is ONETOMANY:
                    for child in list(hist.added or ()) + (
                        list(hist.unchanged or ()) if state.pending else []
                    ):
                        if child is None:
                            continue
                        for local, remote in prop.synchronize_pairs:
                            self._set_column(child, remote, self._get_column(obj, local))
                    for child in hist.deleted or ():
                        if child is None:
                            continue
                        if prop.cascade.delete_orphan:
                            if sa.inspect(child).persistent:
                                self.session.delete(child)
                            elif sa.inspect(child).pending:
                                self.session.expunge(child)
                        elif not prop.passive_deletes:
                            for _, remote in prop.synchronize_pairs:
                                if not remote.primary_key:
                                    self._set_column(child, remote, None)

    # -- rows ------------------------------------------------------------------------

    def _table_rank(self, table: sa.Table) -> int:
        md = table.metadata
        ranks = self._ranks.get(id(md))
        if ranks is None:
            ranks = self._ranks[id(md)] = {t: i for i, t in enumerate(md.sorted_tables)}
        return ranks.get(table, 0)

    def _columns(self, mapper: Any, table: sa.Table) -> List[Tuple[sa.Column, str]]:
        out = []
        for column in table.columns:
            try:
                prop = mapper.get_property_by_column(column)
            except orm_exc.UnmappedColumnError:
                continue
            out.append((column, prop.key))
        return out

    def _key(self, obj: Any, table: sa.Table, mapper: Any, committed: bool) -> Dict[str, Any]:
        state = sa.inspect(obj)
        identity: Dict[str, Any] = {}
        if committed and state.identity is not None:
            for column, value in zip(mapper.primary_key, state.identity):
                identity[mapper.get_property_by_column(column).key] = value
        key = {}
        for column in table.primary_key.columns:
            attr = mapper.get_property_by_column(column).key
            value = identity[attr] if attr in identity else state.dict.get(attr)
            if value is None:
                raise orm_exc.FlushError(
                    f"{_describe(obj)}: primary key column {table.name}.{column.name} is None; "
                    "a journaled session needs every primary key before the flush (set it, or "
                    "give the column a Python-side default=): the journal names each row by "
                    "its key"
                )
            key[column.name] = self.session._db_value(column, value)
        return key

    def _apply_defaults(self, obj: Any) -> None:
        """Python-side defaults of a new object (before relationships read its key): the
        object shows the values its rows get."""
        state = sa.inspect(obj)
        for prop in state.mapper.column_attrs:
            if state.dict.get(prop.key) is not None:
                continue
            for column in prop.columns:
                if isinstance(column, sa.Column) and column.default is not None:
                    value = _call_default(column.default)
                    if value is not _NO_VALUE:
                        setattr(obj, prop.key, value)
                    break

    def _insert(self, obj: Any) -> None:
        state = sa.inspect(obj)
        mapper = state.mapper
        missing = []
        for table in mapper.tables:
            key = self._key(obj, table, mapper, committed=False)
            values = {}
            for column, attr in self._columns(mapper, table):
                if column.primary_key:
                    continue
                value = state.dict.get(attr, _NO_VALUE)
                if value is _NO_VALUE or (value is None and column.server_default is not None):
                    missing.append(attr)
                    continue
                values[column.name] = self.session._db_value(column, value)
            self.inserts.append(
                (
                    self._table_rank(table),
                    {"op": "insert", "table": table.name, "key": key, "values": values},
                )
            )
        self.saved.add(obj)
        if missing:
            self.unloaded.append((obj, sorted(set(missing))))

    def _update(self, obj: Any) -> None:
        state = sa.inspect(obj)
        mapper = state.mapper
        changed = {
            prop.key for prop in mapper.column_attrs if state.attrs[prop.key].history.has_changes()
        }
        self.saved.add(obj)
        if not changed:
            return
        for table in mapper.tables:
            cols = self._columns(mapper, table)
            if not any(attr in changed for _, attr in cols):
                continue
            for column, attr in cols:
                if column.onupdate is not None and attr not in changed:
                    value = _call_default(column.onupdate)
                    if value is not _NO_VALUE:
                        setattr(obj, attr, value)
                        changed.add(attr)
            key = self._key(obj, table, mapper, committed=True)
            values = {}
            for column, attr in cols:
                if attr not in changed:
                    continue
                if column.primary_key:
                    raise orm_exc.FlushError(
                        f"{_describe(obj)}: changing a primary key ({table.name}.{column.name}) "
                        "is not journaled; delete the object and add a new one"
                    )
                values[column.name] = self.session._db_value(column, state.dict.get(attr))
            self.updates.append(
                (
                    self._table_rank(table),
                    {"op": "update", "table": table.name, "key": key, "values": values},
                )
            )

    def _delete(self, obj: Any) -> None:
        mapper = sa.inspect(obj).mapper
        for table in reversed(mapper.tables):
            key = self._key(obj, table, mapper, committed=True)
            self.deletes.append(
                (self._table_rank(table), {"op": "delete", "table": table.name, "key": key})
            )
        self.deleted.add(obj)

    def change_set(self) -> "_native.ChangeSet":
        """The mutations in order: rows deleted and re-added first, then inserts and updates
        parents first, then the other deletes children first."""
        inserted = {(m["table"], tuple(sorted(m["key"].items()))) for _, m in self.inserts}
        switched, deletes = [], []
        for rank, m in self.deletes:
            if (m["table"], tuple(sorted(m["key"].items()))) in inserted:
                switched.append((rank, m))
            else:
                deletes.append((rank, m))
        saves = sorted(self.inserts + self.updates, key=lambda rm: rm[0])
        ordered = (
            [m for _, m in sorted(switched, key=lambda rm: -rm[0])]
            + [m for _, m in saves]
            + [m for _, m in sorted(deletes, key=lambda rm: -rm[0])]
        )
        cs = _native.ChangeSet()
        for m in ordered:
            if m["op"] == "insert":
                cs.insert(m["table"], m["key"], m["values"])
            elif m["op"] == "update":
                cs.update(m["table"], m["key"], m["values"])
            else:
                cs.delete(m["table"], m["key"])
        return cs


def _mark_flushed(
    session: JournaledSession,
    saved: Set[Any],
    deleted: Set[Any],
    unloaded: List[Tuple[Any, List[str]]],
) -> None:
    """Marks the flushed objects persistent (or deleted) as SQLAlchemy's unit of work does,
    and takes them out of the transaction's rollback snapshot: they are durable."""
    saved_states = {sa.inspect(o) for o in saved}
    deleted_states = {sa.inspect(o) for o in deleted}
    if deleted_states:
        session._remove_newly_deleted(deleted_states)
    if saved_states:
        session._register_persistent(saved_states)
    trans = session._transaction
    if trans is not None:
        for t in trans._iterate_self_and_parents():
            for state in saved_states:
                t._new.pop(state, None)
            for state in deleted_states:
                t._deleted.pop(state, None)
    for state in deleted_states:
        state._detach(session)
    for obj, attrs in unloaded:
        session.expire(obj, attrs)
