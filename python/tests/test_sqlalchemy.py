"""The SQLAlchemy integration against a real SQLite target: one change set per flush, and
every failure of the field application's hand-made session manager."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import List, Optional

import pytest
import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.orm import Mapped, mapped_column, relationship

import syncjournal as sj
from syncjournal.sqlalchemy import JournaledSession, schema_sql, sessionmaker
from conftest import target_rows


class Base(orm.DeclarativeBase):
    pass


class Host(Base):
    __tablename__ = "hosts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    address: Mapped[Optional[str]]
    active: Mapped[bool] = mapped_column(default=True)
    seen_at: Mapped[Optional[dt.datetime]]
    os: Mapped[Optional[str]] = mapped_column(server_default="linux")
    domains: Mapped[List["Domain"]] = relationship(
        back_populates="host", cascade="all, delete-orphan"
    )


class Domain(Base):
    __tablename__ = "domains"
    name: Mapped[str] = mapped_column(primary_key=True)
    host_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("hosts.id"))
    registrar: Mapped[Optional[str]]
    host: Mapped[Optional[Host]] = relationship(back_populates="domains")


class Role(Base):
    """A composite primary key."""

    __tablename__ = "roles"
    host_id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[str] = mapped_column(primary_key=True)
    note: Mapped[Optional[str]]


_next = iter(range(1000, 10**9))


class Ticket(Base):
    """A key from a Python-side default."""

    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(primary_key=True, default=lambda: next(_next))
    title: Mapped[str]
    updated: Mapped[Optional[str]] = mapped_column(onupdate=lambda: "edited")
    data: Mapped[Optional[bytes]]


SCHEMA = schema_sql(Base.metadata)


@pytest.fixture
def store(open_store):
    return open_store(schema=SCHEMA, target_schema=SCHEMA, background_sync=False)


@pytest.fixture
def Session(store):
    return sessionmaker(store)


def head(store: sj.Store) -> int:
    return store.journal_state().durable_lsn


def test_one_change_set_per_flush(store, Session, paths):
    with Session() as s:
        s.add_all([Host(id=i, name=f"web-{i}") for i in range(1, 4)])
        s.add(Domain(name="a.example", host_id=1))
        s.commit()
        assert head(store) == 1 and s.last_lsn == 1
        host, gone = s.get(Host, 2), s.get(Host, 3)
        with s.no_autoflush:  # the delete's cascade loads gone.domains: no flush before ours
            host.address = "10.0.0.2"
            s.delete(gone)
        s.flush()
        assert head(store) == 2
        s.commit()  # nothing left: no empty change set
        assert head(store) == 2
    assert store.read("SELECT id, address FROM hosts ORDER BY id") == [(1, None), (2, "10.0.0.2")]
    assert store.sync_now().applied == 2
    assert target_rows(paths.target, "SELECT id, name, address FROM hosts ORDER BY id") == [
        (1, "web-1", None),
        (2, "web-2", "10.0.0.2"),
    ]


def test_deletes_reach_the_share(store, Session, paths):
    with Session() as s:
        s.add_all([Host(id=i, name=f"h{i}") for i in range(10)])
        s.commit()
    store.sync_now()
    before = head(store)
    with Session() as s:
        for h in s.scalars(sa.select(Host).where(Host.id >= 5)).all():
            s.delete(h)  # each delete's cascade load autoflushes the deletes before it
        s.commit()
    report = store.sync_now()
    assert report.ok and report.applied == head(store) - before > 0
    assert target_rows(paths.target, "SELECT id FROM hosts ORDER BY id") == [(i,) for i in range(5)]


def test_pending_counts_are_right_right_after_deletes(store, Session):
    with Session() as s:
        s.add_all([Host(id=i, name=f"h{i}") for i in range(3)])
        s.commit()
    store.sync_now()
    assert store.status().pending_entries == 0
    with Session() as s:
        s.delete(s.get(Host, 0))
        s.commit()
        s.delete(s.get(Host, 1))
        s.commit()
    st = store.status()
    assert st.pending_entries == 2 and st.state is not sj.SyncState.IN_SYNC
    assert store.sync_now().applied == 2
    assert store.status().pending_entries == 0


def test_force_sync_reports_its_count(store, Session):
    with Session() as s:
        for i in range(7):
            s.add(Host(id=i, name="h"))
            s.commit()
    report = store.sync_now()
    assert (report.applied, report.pending, report.ok) == (7, 0, True)
    assert "applied 7 entries" in str(report)


def test_pending_work_survives_a_restart(open_store, paths):
    first = open_store(schema=SCHEMA, target_schema=SCHEMA, background_sync=False)
    first.sync_now()
    with sessionmaker(first)() as s:
        s.add_all([Host(id=i, name=f"h{i}") for i in range(4)])
        s.commit()
        s.delete(s.get(Host, 0))
        s.commit()
    assert first.status().pending_entries == 2
    first.close()
    again = open_store(schema=SCHEMA, target_schema=SCHEMA, background_sync=False)
    assert again.status().pending_entries == 2
    assert again.sync_now().applied == 2
    assert target_rows(paths.target, "SELECT id FROM hosts ORDER BY id") == [(1,), (2,), (3,)]


def test_no_session_bypasses_the_journal(store, paths):
    plain = orm.sessionmaker(bind=sa.create_engine(f"sqlite:///{paths.cache}"))
    with plain() as s:
        s.add(Host(id=1, name="around"))
        with pytest.raises(sa.exc.OperationalError, match="write_through_the_syncjournal_store"):
            s.commit()
    with plain() as s:
        with pytest.raises(sa.exc.OperationalError, match="write_through_the_syncjournal_store"):
            s.execute(sa.text("DELETE FROM hosts"))
    # ORM bulk statements on a journaled session emit SQL, and are refused the same way.
    with sessionmaker(store)() as s:
        with pytest.raises(sa.exc.OperationalError):
            s.execute(sa.update(Host).values(name="x"))
    assert store.read("SELECT count(*) FROM hosts") == [(0,)]
    assert head(store) == 0


def test_a_refused_flush_raises_and_rolls_the_session_back(store, Session):
    with Session() as s:
        s.add(Host(id=1, name="first"))
        s.commit()
    with Session() as s:
        dup = Host(id=1, name="duplicate")
        s.add(dup)
        s.add(Host(id=2, name="second"))
        with pytest.raises(sj.ChangeRefused):
            s.commit()
        assert dup not in s and not s.new
        assert sa.inspect(dup).transient
        # The session is usable again, and nothing was journaled.
        s.add(Host(id=3, name="third"))
        s.commit()
    assert head(store) == 2
    assert store.read("SELECT id, name FROM hosts ORDER BY id") == [(1, "first"), (3, "third")]


def test_a_new_object_needs_its_key(store, Session):
    with Session() as s:
        s.add(Host(name="no key"))
        with pytest.raises(orm.exc.FlushError, match="primary key column hosts.id is None"):
            s.flush()
        assert not s.new
    assert head(store) == 0


def test_python_defaults_and_onupdate(store, Session):
    with Session() as s:
        t = Ticket(title="a", data=b"\x00\xff")
        s.add(t)
        s.commit()
        assert t.id >= 1000 and t.updated is None
        t.title = "b"
        s.commit()
        assert t.updated == "edited" and t.data == b"\x00\xff"
    assert store.read("SELECT title, updated, data FROM tickets") == [("b", "edited", b"\x00\xff")]


def test_composite_keys(store, Session, paths):
    with Session() as s:
        s.add_all([Role(host_id=1, role="web"), Role(host_id=1, role="db"), Role(host_id=2, role="web")])
        s.commit()
        s.get(Role, (1, "db")).note = "primary"
        s.delete(s.get(Role, (2, "web")))
        s.commit()
    store.sync_now()
    assert target_rows(paths.target, "SELECT host_id, role, note FROM roles ORDER BY role") == [
        (1, "db", "primary"),
        (1, "web", None),
    ]


def test_relationships_set_foreign_keys_and_orphans_are_deleted(store, Session, paths):
    with Session() as s:
        h = Host(id=1, name="web-1")
        h.domains = [Domain(name="a.example"), Domain(name="b.example")]
        s.add(h)
        s.commit()
        assert store.read("SELECT name, host_id FROM domains ORDER BY name") == [
            ("a.example", 1),
            ("b.example", 1),
        ]
        other = Host(id=2, name="web-2")
        s.add(other)
        d = s.get(Domain, "a.example")
        d.host = other  # many-to-one
        s.commit()
        h = s.get(Host, 1)
        h.domains.remove(s.get(Domain, "b.example"))  # delete-orphan
        s.commit()
        s.delete(s.get(Host, 2))  # cascades to its domains
        s.commit()
    assert store.read("SELECT count(*) FROM domains") == [(0,)]
    store.sync_now()
    assert target_rows(paths.target, "SELECT id FROM hosts") == [(1,)]
    assert target_rows(paths.target, "SELECT count(*) FROM domains") == [(0,)]


def test_types_go_through_sqlalchemy_processors_and_server_defaults_load(store, Session):
    seen = dt.datetime(2026, 11, 25, 8, 30, 15)
    with Session() as s:
        h = Host(id=1, name="web-1", active=False, seen_at=seen)
        s.add(h)
        s.commit()
        assert h.os == "linux"  # the server default, loaded from the cache
    with Session() as s:
        h = s.get(Host, 1)
        assert (h.active, h.seen_at, h.os) == (False, seen, "linux")
    assert store.read("SELECT active, seen_at FROM hosts") == [(0, "2026-11-25 08:30:15.000000")]


def test_a_row_deleted_and_added_again_in_one_flush(store, Session):
    with Session() as s:
        s.add(Host(id=1, name="old"))
        s.commit()
        s.delete(s.get(Host, 1))
        s.flush()
        s.add(Host(id=1, name="new"))
        s.commit()
    assert store.read("SELECT name FROM hosts") == [("new",)]


def test_a_flush_is_durable_and_rollback_does_not_pretend_otherwise(store, Session):
    with Session() as s:
        h = Host(id=1, name="kept")
        s.add(h)
        s.flush()
        s.rollback()
        assert sa.inspect(h).persistent
        assert s.get(Host, 1).name == "kept"
    assert store.read("SELECT name FROM hosts") == [("kept",)]


def test_reads_through_the_session_see_the_cache(store, Session):
    store.apply(sj.ChangeSet().upsert("hosts", {"id": 9}, {"name": "from-apply", "active": 1}))
    with Session() as s:
        assert s.scalars(sa.select(Host.name)).all() == ["from-apply"]


def test_the_session_needs_a_store():
    with pytest.raises(TypeError):
        JournaledSession(store=object())
