"""The task filter behind `/` in the app."""

from __future__ import annotations

from dataclasses import dataclass

from fetchml.tui.models import TaskView


@dataclass(frozen=True)
class TaskFilter:
    """`/` in the app: `user:alice status:running name:train`, and bare words, each of which must
    appear in the task's id, job name or user (case-insensitive)."""

    text: str = ""
    user: str | None = None
    status: str | None = None
    name: str | None = None
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> TaskFilter:
        user = status = name = None
        words: list[str] = []
        for tok in text.split():
            key, sep, value = tok.partition(":")
            key = key.lower()
            if sep and key in ("user", "u") and value:
                user = value
            elif sep and key in ("status", "s") and value:
                status = value.lower()
            elif sep and key in ("name", "n", "job") and value:
                name = value.lower()
            else:
                words.append(tok.lower())
        return cls(text.strip(), user, status, name, tuple(words))

    def __bool__(self) -> bool:
        return bool(self.user or self.status or self.name or self.words)

    def matches(self, t: TaskView) -> bool:
        if self.user is not None and t.user_id != self.user:
            return False
        if self.status is not None and t.status != self.status:
            return False
        if self.name is not None and self.name not in t.job_name.lower():
            return False
        for w in self.words:
            if w not in t.id and w not in t.job_name.lower() and w not in t.user_id.lower():
                return False
        return True


NO_FILTER = TaskFilter()
