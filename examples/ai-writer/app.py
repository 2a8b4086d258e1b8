"""AI Writer: a FastAPI back end with Herald mounted in it (examples/ai-writer/README.md).

A user starts "write a chapter" tasks. Each runs in the background for a while,
reports its progress through the producer SDK (``herald_publisher.progress``, retained:
a page loaded mid-task gets the latest progress first on its stream),
and at the end writes the chapter and, in the same transaction, an outbox row
(``add_event``) that Herald's outbox poller turns into ``chapter.draft-created``.
The React page (web/) streams the user's events from ``/herald`` and keeps its
TanStack Query caches fresh with them.

Configuration (run.py sets it; see the README):

- ``EXAMPLE_DATABASE_URL``: ``postgresql+asyncpg://…`` (the outbox) or ``sqlite+aiosqlite://…``
  (no outbox: the chapter's event is published over HTTP after the commit);
- ``HERALD_JWT_SECRET``: the key of the users' tokens, shared with the mounted gateway;
- ``EXAMPLE_SELF_URL``: where this app listens (the SDK publishes to ``{url}/herald``);
- ``EXAMPLE_STEPS`` and ``EXAMPLE_STEP_SECONDS``: how long the pretend model takes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Cookie, FastAPI, HTTPException
from fastapi.staticfiles import StaticFiles
from herald_publisher import AsyncPublisher, add_event, progress
from herald_publisher.catalogue import ChapterDraftCreated
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from herald.api.app import create_app
from herald.config import Settings
from herald.gateway import Gateway
from herald.sources.outbox import init_outbox

log = logging.getLogger("ai_writer")
HERE = Path(__file__).resolve().parent
WEB = HERE / "web" / "dist"

DATABASE_URL = os.environ.get("EXAMPLE_DATABASE_URL", f"sqlite+aiosqlite:///{HERE / 'ai-writer.db'}")
SECRET = os.environ["HERALD_JWT_SECRET"]
SELF_URL = os.environ.get("EXAMPLE_SELF_URL", "http://127.0.0.1:8080").rstrip("/")
STEPS = int(os.environ.get("EXAMPLE_STEPS", "20"))
STEP_SECONDS = float(os.environ.get("EXAMPLE_STEP_SECONDS", "0.5"))
#: The outbox needs PostgreSQL: Herald's poller reads the table with asyncpg.
OUTBOX = DATABASE_URL.startswith("postgresql")
#: The users' tokens live this long; the browser asks /api/herald-token for a new one when told.
TOKEN_TTL_SECONDS = 900


# --- the application's data


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "writer_tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(String(200), nullable=True)
    document_id: Mapped[str | None] = mapped_column(ForeignKey("writer_documents.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Document(Base):
    __tablename__ = "writer_documents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    number: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)


engine = create_async_engine(DATABASE_URL)
Session = async_sessionmaker(engine, expire_on_commit=False)


# --- Herald, mounted: same origin as the page, no CORS, one process


def asyncpg_dsn(url: str) -> str:
    """SQLAlchemy's ``postgresql+asyncpg://`` URL as the plain DSN Herald's outbox poller takes."""
    return "postgresql://" + url.split("://", 1)[1]


gateway = Gateway(
    Settings(
        jwt_secret=SECRET,
        outbox_dsn=asyncpg_dsn(DATABASE_URL) if OUTBOX else None,
        # Progress bars move smoothly: a task's progress events go out at most 4 a second.
        coalesce_interval_seconds=0.25,
    )
)


def publisher_token() -> str:
    """The back end's own token for the SDK: it may publish (asked again before each request)."""
    now = int(time.time())
    claims = {"sub": "ai-writer", "iat": now, "exp": now + 300, "roles": ["publisher"]}
    return jwt.encode(claims, SECRET, algorithm="HS256")


publisher = AsyncPublisher(f"{SELF_URL}/herald", publisher_token)
running: set[asyncio.Task[None]] = set()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    if OUTBOX:
        await init_outbox(asyncpg_dsn(DATABASE_URL))  # `herald outbox init`: table, indexes, trigger
    await gateway.start()  # a mounted app's lifespan does not run: the host runs the gateway's
    try:
        yield
    finally:
        for task in list(running):
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await publisher.aclose()
        await gateway.stop()
        await engine.dispose()


app = FastAPI(title="AI Writer", lifespan=lifespan)
app.mount("/herald", create_app(gateway, manage_gateway=False))


# --- the API the page uses


class TaskView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    title: str
    status: str
    progress: int
    message: str | None
    document_id: str | None


class DocumentView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    number: int
    title: str
    body: str


class NewTask(BaseModel):
    title: str | None = Field(None, max_length=200)


#: The ``writer_user`` cookie, if the page set one.
UserCookie = Annotated[str | None, Cookie()]


def current_user(writer_user: str | None) -> str:
    """The signed-in user: a fixed demo user, or the ``writer_user`` cookie (the app's own login)."""
    return writer_user or "demo"


@app.get("/api/herald-token")
async def herald_token(writer_user: UserCookie = None) -> dict[str, Any]:
    """The user's JWT for the stream (HS256 with the secret Herald verifies with); the page asks
    for it on every connection attempt, so it is always fresh."""
    user = current_user(writer_user)
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + TOKEN_TTL_SECONDS, "resources": [f"novel:{user}"]}
    return {
        "token": jwt.encode(claims, SECRET, algorithm="HS256"),
        "user": user,
        "subscribe": [f"novel:{user}"],
    }


@app.get("/api/tasks")
async def list_tasks(writer_user: UserCookie = None) -> list[TaskView]:
    user = current_user(writer_user)
    async with Session() as session:
        rows = await session.scalars(
            select(Task).where(Task.user_id == user).order_by(Task.created_at.desc(), Task.id)
        )
        return [TaskView.model_validate(task) for task in rows]


@app.post("/api/tasks", status_code=201)
async def start_task(body: NewTask, writer_user: UserCookie = None) -> TaskView:
    user = current_user(writer_user)
    async with Session() as session, session.begin():
        count = await session.scalar(select(func.count()).select_from(Task).where(Task.user_id == user))
        task = Task(
            id=str(uuid.uuid4()),
            user_id=user,
            title=body.title or TITLES[(count or 0) % len(TITLES)],
            status="pending",
            progress=0,
        )
        session.add(task)
    job = asyncio.create_task(write_chapter(task.id, user, task.title), name=f"write-{task.id}")
    running.add(job)
    job.add_done_callback(running.discard)
    return TaskView.model_validate(task)


@app.get("/api/documents/{document_id}")
async def get_document(document_id: str, writer_user: UserCookie = None) -> DocumentView:
    async with Session() as session:
        document = await session.get(Document, document_id)
    if document is None or document.user_id != current_user(writer_user):
        raise HTTPException(404, "no such document")
    return DocumentView.model_validate(document)


# --- the long task


PHRASES = [
    "The lighthouse keeper counted the ships that never came.",
    "Rain wrote its own story on the harbour windows.",
    "Somewhere below, the engine of the old ferry coughed awake.",
    "She folded the letter twice, then a third time, as if to hide it from herself.",
    "Nobody in the village remembered who had planted the orchard.",
    "The map was wrong in exactly one place, and that place mattered.",
]
TITLES = ["The Lighthouse Keeper", "Rain on the Harbour", "The Old Ferry", "The Folded Letter", "The Orchard"]
STAGES = ["outlining", "drafting", "drafting", "revising", "polishing"]


async def save_progress(session: AsyncSession, task_id: str, **values: Any) -> None:
    await session.execute(update(Task).where(Task.id == task_id).values(**values))


async def write_chapter(task_id: str, user: str, title: str) -> None:
    """The background task; a task that failed or was cancelled (the app stopping) says so in its row,
    as the SDK's ``progress`` block already told the page."""
    try:
        await draft(task_id, user, title)
    except asyncio.CancelledError:
        await mark(task_id, "cancelled")
        raise
    except Exception:
        log.exception("chapter task %s failed", task_id)
        await mark(task_id, "failed")


async def mark(task_id: str, status: str) -> None:
    async with Session() as session, session.begin():
        await save_progress(session, task_id, status=status)


async def draft(task_id: str, user: str, title: str) -> None:
    """The pretend model: ``STEPS`` steps of ``STEP_SECONDS``, progress through the SDK, and the
    chapter with its event in one transaction at the end."""
    paragraphs: list[str] = []
    # The row first, then the events that tell of it: a page re-fetching on an event sees it.
    await mark(task_id, "running")
    # retain: the latest progress is kept as the task's retained state; a page (re)loaded
    # mid-task gets it first on its stream, before any fetch.
    async with progress(
        publisher,
        user_id=user,
        task_id=task_id,
        task_type="chapter-draft",
        description=title,
        rate=5,
        retain=True,
    ) as reporter:
        for step in range(1, STEPS + 1):
            await asyncio.sleep(STEP_SECONDS)
            paragraphs.append(" ".join(random.sample(PHRASES, 3)))
            percent = min(99, step * 100 // STEPS)  # 100 is the commit below
            stage = STAGES[min(len(STAGES) - 1, (step - 1) * len(STAGES) // STEPS)]
            async with Session() as session, session.begin():
                await save_progress(session, task_id, progress=percent, message=stage)
            await reporter.update(percent, stage, estimated_remaining=(STEPS - step) * STEP_SECONDS)

        document_id = str(uuid.uuid4())
        async with Session() as session, session.begin():
            number = 1 + (await session.scalar(select(func.count()).where(Document.user_id == user)) or 0)
            session.add(
                Document(
                    id=document_id, user_id=user, number=number, title=title, body="\n\n".join(paragraphs)
                )
            )
            await session.flush()
            await save_progress(
                session, task_id, status="completed", progress=100, message="done", document_id=document_id
            )
            created = ChapterDraftCreated(
                chapter_id=document_id, chapter_number=number, title=title, novel_id=user
            )
            if OUTBOX:
                # The event exists exactly when the chapter does: same transaction.
                await add_event(session, created)
        await reporter.update(100, "done")
    if not OUTBOX:
        # Without PostgreSQL there is no outbox: publish after the commit (a crash in between
        # would lose this event; the key makes a retry of this call harmless).
        await publisher.publish(created, idempotency_key=f"chapter-{document_id}-created")


# --- the page (web/, built by `npm run build` into web/dist)

if WEB.is_dir():
    app.mount("/", StaticFiles(directory=WEB, html=True), name="web")
