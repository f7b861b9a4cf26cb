"""Start with rigs known down: ask at once (start without them / wait for them / cancel), and the waiting.

The question and what each answer does are the console's (:meth:`app.console.Console.start_offer`,
``start(without=...)``, :meth:`~app.console.Console.wait_for_rigs`); these are the two thin boxes.
"""

from __future__ import annotations

import asyncio

from PySide6.QtWidgets import QMessageBox, QWidget

from app.console import Console, StartOffer
from app.gui.qtasync import ask

WITHOUT, WAIT, CANCEL = "without", "wait", "cancel"


async def ask_rigs_down(parent: QWidget, offer: StartOffer) -> str:
    """:data:`WITHOUT`, :data:`WAIT` or :data:`CANCEL`."""
    plural = len(offer.down) > 1
    box = QMessageBox(QMessageBox.Icon.Warning, "Rigs cannot be reached", offer.text, parent=parent)
    box.setObjectName("rigsDown")
    buttons = {}
    if offer.can_continue:
        buttons[WITHOUT] = box.addButton(f"Start without {'them' if plural else 'it'}",
                                         QMessageBox.ButtonRole.AcceptRole)
    buttons[WAIT] = box.addButton(f"Wait for {'them' if plural else 'it'}", QMessageBox.ButtonRole.ActionRole)
    buttons[CANCEL] = box.addButton(QMessageBox.StandardButton.Cancel)
    for key, button in buttons.items():
        button.setObjectName(f"rigsDown_{key}")
    box.setDefaultButton(buttons[CANCEL])
    clicked = await ask(box)
    if clicked == QMessageBox.StandardButton.Cancel:
        return CANCEL
    return next((key for key, button in buttons.items() if button is clicked), CANCEL)


async def wait_for_rigs(parent: QWidget, console: Console, names: list[str]) -> bool:
    """Show "waiting for ..." until the rigs are back (True) or the experimenter cancels (False)."""
    box = QMessageBox(QMessageBox.Icon.Information, "Waiting for rigs",
                      f"Waiting for {', '.join(names)} to come back; the session starts as soon as "
                      f"{'they are' if len(names) > 1 else 'it is'}.",
                      QMessageBox.StandardButton.Cancel, parent)
    box.setObjectName("waitingForRigs")
    answer = ask(box)
    back = asyncio.ensure_future(console.wait_for_rigs(names))
    try:
        await asyncio.wait({answer, back}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not back.done():
            back.cancel()
        if box.isVisible():
            box.done(0)
    return back.done() and not back.cancelled() and back.exception() is None
