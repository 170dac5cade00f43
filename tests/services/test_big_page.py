"""Pages of more than BIG_PAGE_ROWS rows are built one at a time; smaller pages never wait."""

from __future__ import annotations

import asyncio

from fetchml.services.budget import BIG_PAGE_ROWS, big_page


def test_big_pages_take_turns_and_small_ones_do_not_wait() -> None:
    async def scenario() -> tuple[int, list[str]]:
        inside = 0
        most = 0
        order: list[str] = []
        release = asyncio.Event()

        async def page(name: str, rows: int) -> None:
            nonlocal inside, most
            async with big_page(rows):
                inside += 1
                most = max(most, inside)
                order.append(name)
                if name == "big-1":
                    await asyncio.wait_for(release.wait(), 5)
                await asyncio.sleep(0)
                inside -= 1

        first = asyncio.create_task(page("big-1", 1000))
        await asyncio.sleep(0)
        second = asyncio.create_task(page("big-2", BIG_PAGE_ROWS + 1))
        await asyncio.wait_for(page("small", BIG_PAGE_ROWS), 5)  # passes while big-1 holds the gate
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        return most, order

    most, order = asyncio.run(scenario())
    assert order == ["big-1", "small", "big-2"]
    assert most == 2  # big-1 and small; never two big pages
