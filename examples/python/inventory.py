"""The field application in miniature, on SQLAlchemy: an infrastructure inventory
(certificates, hosts, domains) kept in a local SQLite cache and synced to a database on a
"share" through syncjournal. The session is the replacement for the hand-made session manager
and its ``sync_tracking`` table.

Run (after ``pip install "./python[sqlalchemy]"``)::

    python examples/python/inventory.py [DIR]

DIR defaults to a new temporary directory; point its ``share.db`` at a real network share to
see the real thing. It adds hosts with their domains and certificates, renews and moves some,
decommissions three hosts (the deletions that, in the original application, never reached the
share), shows the pending count, forces a sync, checks that the share equals the cache, and
shows that a session that goes around the journal cannot write.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.orm import Mapped, mapped_column, relationship

import syncjournal as sj
from syncjournal.sqlalchemy import schema_sql, sessionmaker


class Base(orm.DeclarativeBase):
    pass


class Host(Base):
    __tablename__ = "hosts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    address: Mapped[Optional[str]]
    os: Mapped[Optional[str]]
    domains: Mapped[List["Domain"]] = relationship(back_populates="host", cascade="all, delete-orphan")


class Domain(Base):
    __tablename__ = "domains"
    name: Mapped[str] = mapped_column(primary_key=True)
    host_id: Mapped[Optional[int]] = mapped_column(sa.ForeignKey("hosts.id"))
    registrar: Mapped[Optional[str]]
    host: Mapped[Optional[Host]] = relationship(back_populates="domains")
    certificates: Mapped[List["Certificate"]] = relationship(
        back_populates="domain", cascade="all, delete-orphan"
    )


class Certificate(Base):
    __tablename__ = "certificates"
    id: Mapped[int] = mapped_column(primary_key=True)
    domain_name: Mapped[str] = mapped_column(sa.ForeignKey("domains.name"))
    not_after: Mapped[dt.date]
    pem: Mapped[Optional[bytes]]
    domain: Mapped[Domain] = relationship(back_populates="certificates")


SCHEMA = schema_sql(Base.metadata)


def dump(rows) -> list:
    return sorted(tuple(r) for r in rows)


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="syncjournal-inventory-"))
    root.mkdir(parents=True, exist_ok=True)
    share = root / "share.db"
    store = sj.Store(
        str(root / "journal"),
        str(root / "cache.db"),
        schema=SCHEMA,
        target=str(share),
        # The example creates the "share" database; against a real share, leave these off so
        # that an unmounted share is an error, not a new empty local file.
        create_target=True,
        target_schema=SCHEMA,
        # Applications normally keep the background sync (the default); it is off here so
        # that the pending entries and the force sync show.
        background_sync=False,
    )
    store.sync_now()  # creates the "share"
    Session = sessionmaker(store)
    with store, Session() as session:
        # Inventory: 20 hosts, a domain and a certificate on each: one change set per commit.
        for i in range(1, 21):
            host = Host(id=i, name=f"web-{i:02}", address=f"10.0.0.{i}", os="debian-12")
            domain = Domain(name=f"web-{i:02}.example.org", registrar="acme", host=host)
            domain.certificates.append(
                Certificate(id=i, not_after=dt.date(2026, 12, 31), pem=bytes([0x30, 0x82, i]))
            )
            session.add(host)
            session.commit()
        # Renew some certificates and move a host, then decommission three hosts with
        # everything on them: one change set each (no_autoflush: the loads in between would
        # otherwise flush what is pending as change sets of their own).
        with session.no_autoflush:
            for i in (2, 4, 6):
                session.get(Certificate, i).not_after = dt.date(2027, 12, 31)
            session.get(Host, 7).address = "10.0.1.7"
        session.commit()
        with session.no_autoflush:
            for i in (3, 13, 17):
                session.delete(session.get(Host, i))
        session.commit()

        # A change the cache refuses raises, nothing is journaled, and the session rolls back.
        session.add(Host(id=1, name="duplicate"))
        try:
            session.commit()
        except sj.ChangeRefused as e:
            print(f"refused as expected: {e}")

        before = store.status()
        print(f"before sync: head {before.head_lsn}, pending {before.pending_entries} change sets "
              f"({before.pending_bytes} bytes), state {before.state}")
        report = store.sync_now()
        print(f"force sync: {report}")
        report.raise_for_error()

        # The share now holds exactly what the cache holds. (Python's sqlite3 is another copy
        # of SQLite than the store's: its locks and the store's do not see each other in one
        # process, so this read happens while no sync runs; a real application reads the
        # share from another process, or not at all.)
        target = sqlite3.connect(f"file:{share}?mode=ro", uri=True)
        for table in ("hosts", "domains", "certificates"):
            cache_rows = dump(store.read(f"SELECT * FROM {table}"))
            share_rows = dump(target.execute(f"SELECT * FROM {table}"))
            assert cache_rows == share_rows, f"{table} differs between cache and share"
            print(f"{table}: {len(share_rows)} rows, share equals cache")
        target.close()

        # Reads go to the cache through the session, as usual.
        renewed = session.scalars(
            sa.select(Certificate.id).where(Certificate.not_after > dt.date(2027, 1, 1))
        ).all()
        print(f"renewed certificates: {sorted(renewed)}")

        # No code path writes around the journal: a plain session on the cache cannot write.
        plain = orm.sessionmaker(bind=sa.create_engine(f"sqlite:///{store.cache_path}"))()
        plain.add(Host(id=99, name="around the journal"))
        try:
            plain.commit()
            raise SystemExit("a plain session wrote the cache")
        except sa.exc.OperationalError as e:
            print(f"a plain session cannot write: {e.orig}")
        finally:
            plain.close()

        after = store.status()
        print(f"after sync: head {after.head_lsn}, acknowledged {after.acked_lsn}, "
              f"pending {after.pending_entries}, state {after.state}")
    print(f"files: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
