"""Sietch's computer-use actions: their shapes, their checks, and how they are carried out
(pure logic: :mod:`sietch.core.desktop` runs them).

The pointer at given coordinates goes through the host's VNC connection
(:func:`pointer_events`): a click is a few bytes and one round trip, where an
xdotool run costs a process start in the emulated guest (170-250 ms measured
under load, against ~25 ms). Keys, text and pointer actions without
coordinates or with modifiers go through xdotool in the guest
(:func:`xdotool`): key names and combinations (``ctrl+l``, ``Return``) mean
exactly what xdotool, and the agent frameworks built on it, say they mean.
Either way an action has been applied by the X server when it returns.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sietch.errors import InvalidArgument, PayloadTooLarge, describe_validation

MAX_TYPE = 10_000
"""Characters one ``type`` action may type (each one is a key press in an emulated guest)."""
MAX_TYPE_S = 60.0
"""Seconds of ``delay_ms`` one ``type`` may add up to: more outlasts the SDK's wait for an
action (120 s; 10,000 characters at the default 12 ms are 120 s), so it is refused."""
TYPE_CHUNK = 200
"""Characters per xdotool run: a long text is typed in several, each one a bounded command."""
MAX_CLIPBOARD = 1 << 20
BUTTONS = {"left": 1, "middle": 2, "right": 3}
WHEEL = {"up": 4, "down": 5, "left": 6, "right": 7}
DISPLAY_ENV = {"DISPLAY": ":0"}

Button = Literal["left", "middle", "right"]
Coordinate = Annotated[int, Field(ge=0, le=65535)]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")

    screenshot: bool = False
    """Return a screenshot (PNG, base64) taken after the action."""

    def points(self) -> list[tuple[int, int]]:
        """Screen coordinates the action touches: each must be on the screen."""
        x, y = getattr(self, "x", None), getattr(self, "y", None)
        return [(x, y)] if x is not None and y is not None else []


class _Pointer(_Action):
    x: Coordinate | None = None
    """Where to move first; without x and y, where the pointer is."""
    y: Coordinate | None = None

    def pointer(self) -> list[str]:
        if (self.x is None) != (self.y is None):
            raise InvalidArgument(f"{self.action}: give both x and y, or neither")  # type: ignore[attr-defined]
        return [] if self.x is None else ["mousemove", str(self.x), str(self.y)]


class Move(_Action):
    action: Literal["move"]
    x: Coordinate
    y: Coordinate


class Click(_Pointer):
    action: Literal["click"]
    button: Button = "left"
    count: int = Field(default=1, ge=1, le=3)
    """2 is a double click, 3 a triple click."""
    modifiers: str | None = Field(default=None, max_length=100)
    """Keys held during the click, xdotool names joined by '+' (``shift``, ``ctrl+alt``)."""


class MouseDown(_Pointer):
    action: Literal["mouse_down"]
    button: Button = "left"


class MouseUp(_Pointer):
    action: Literal["mouse_up"]
    button: Button = "left"


class Drag(_Action):
    action: Literal["drag"]
    path: list[tuple[Coordinate, Coordinate]] = Field(min_length=2, max_length=1000)
    """Points the pointer passes through with the button held: the first is where it goes
    down, the last where it comes up."""
    button: Button = "left"

    def points(self) -> list[tuple[int, int]]:
        return list(self.path)


class Scroll(_Pointer):
    action: Literal["scroll"]
    direction: Literal["up", "down", "left", "right"] = "down"
    amount: int = Field(default=3, ge=1, le=100)
    """Wheel clicks."""
    modifiers: str | None = Field(default=None, max_length=100)


class Key(_Action):
    action: Literal["key"]
    keys: str = Field(min_length=1, max_length=500)
    """xdotool key names, combinations joined by '+', several separated by spaces:
    ``ctrl+l``, ``Return``, ``ctrl+a BackSpace``."""


class HoldKey(_Action):
    action: Literal["hold_key"]
    keys: str = Field(min_length=1, max_length=100)
    duration: float = Field(gt=0, le=30)
    """Seconds."""


class Type(_Action):
    action: Literal["type"]
    text: str = Field(min_length=1)
    delay_ms: int = Field(default=12, ge=0, le=1000)
    """Between two key presses."""


class Wait(_Action):
    action: Literal["wait"]
    duration: float = Field(default=1.0, ge=0, le=60)


class CursorPosition(_Action):
    action: Literal["cursor_position"]


class ScreenSize(_Action):
    action: Literal["screen_size"]


class OpenUrl(_Action):
    action: Literal["open_url"]
    url: str = Field(min_length=1, max_length=8192, pattern=r"^(https?|file|about|data):")


class Launch(_Action):
    action: Literal["launch"]
    command: list[str] = Field(min_length=1, max_length=256)
    """The application and its arguments (``["xfce4-terminal"]``), run as the desktop's user."""


class Windows(_Action):
    action: Literal["windows"]


class ClipboardGet(_Action):
    action: Literal["clipboard_get"]


class ClipboardSet(_Action):
    action: Literal["clipboard_set"]
    text: str


Action = Annotated[
    Move
    | Click
    | MouseDown
    | MouseUp
    | Drag
    | Scroll
    | Key
    | HoldKey
    | Type
    | Wait
    | CursorPosition
    | ScreenSize
    | OpenUrl
    | Launch
    | Windows
    | ClipboardGet
    | ClipboardSet,
    Field(discriminator="action"),
]
"""One action; ``{"action": "click", "x": 10, "y": 20}``."""


_ACTION: TypeAdapter[Action] = TypeAdapter(Action)


def parse_action(fields: dict[str, Any]) -> Action:
    """An action from its JSON fields; :class:`InvalidArgument` says what is wrong."""
    try:
        return _ACTION.validate_python(fields)
    except ValidationError as exc:
        raise InvalidArgument(describe_validation(exc.errors())) from None


def check(action: _Action, width: int, height: int) -> None:
    """Refuse what the guest could not do: a point off the screen, too much text."""
    for x, y in action.points():
        if not (0 <= x < width and 0 <= y < height):
            raise InvalidArgument(
                f"{action.action}: ({x}, {y}) is off the screen, which is "  # type: ignore[attr-defined]
                f"{width}x{height} (x from 0 to {width - 1}, y from 0 to {height - 1})",
                x=x,
                y=y,
                width=width,
                height=height,
            )
    if isinstance(action, Type) and len(action.text) > MAX_TYPE:
        raise PayloadTooLarge(
            f"type: {len(action.text)} characters is more than {MAX_TYPE} at once; "
            "split the text, or write it to a file and paste it (clipboard_set)"
        )
    if isinstance(action, Type) and len(action.text) * action.delay_ms > MAX_TYPE_S * 1000:
        raise PayloadTooLarge(
            f"type: {len(action.text)} characters {action.delay_ms} ms apart take "
            f"{len(action.text) * action.delay_ms / 1000:g} s, more than the {MAX_TYPE_S:g} s "
            "one action may take; split the text, lower delay_ms, or paste it (clipboard_set)"
        )
    if isinstance(action, ClipboardSet) and len(action.text.encode()) > MAX_CLIPBOARD:
        raise PayloadTooLarge(f"clipboard_set: more than {MAX_CLIPBOARD} bytes")


PointerEvent = tuple[int, int, int]
"""x, y and the mask of the buttons down (RFB's PointerEvent)."""
MASKS = {"left": 1, "middle": 2, "right": 4}
WHEEL_MASKS = {"up": 8, "down": 16, "left": 32, "right": 64}


def pointer_events(action: _Action, held: int) -> tuple[list[list[PointerEvent]], int] | None:
    """The batches of pointer events that do ``action`` with ``held`` buttons down, and the
    buttons down after it; None when it needs xdotool (no coordinates, or modifiers)."""
    match action:
        case Move(x=x, y=y):
            return [[(x, y, held)]], held
        case Drag(path=path, button=button):
            bit = MASKS[button]
            (x0, y0), (xn, yn) = path[0], path[-1]
            down = [(x0, y0, held), (x0, y0, held | bit)]
            moves = [(x, y, held | bit) for x, y in path[1:]]
            return [down, moves, [(xn, yn, held & ~bit)]], held & ~bit
    px, py = getattr(action, "x", None), getattr(action, "y", None)
    if px is None or py is None or getattr(action, "modifiers", None):
        return None
    return _at(action, px, py, held)


def _at(action: _Action, x: int, y: int, held: int) -> tuple[list[list[PointerEvent]], int] | None:
    match action:
        case Click(button=button, count=count):
            bit = MASKS[button]
            clicks = [(x, y, held | bit), (x, y, held & ~bit)] * count
            return [[(x, y, held), *clicks]], held & ~bit
        case MouseDown(button=button):
            return [[(x, y, held), (x, y, held | MASKS[button])]], held | MASKS[button]
        case MouseUp(button=button):
            return [[(x, y, held), (x, y, held & ~MASKS[button])]], held & ~MASKS[button]
        case Scroll(direction=direction, amount=amount):
            wheel = WHEEL_MASKS[direction]
            turns = [(x, y, held | wheel), (x, y, held)] * amount
            return [[(x, y, held), *turns]], held
    return None


def _held(modifiers: str | None, inner: list[str]) -> list[str]:
    if not modifiers:
        return inner
    return ["keydown", modifiers, *inner, "keyup", modifiers]


def xdotool(action: _Action) -> list[list[str]]:
    """The xdotool argument lists (after ``xdotool``) that do a pointer or key action,
    in order; empty for the actions done otherwise."""
    match action:
        case Move(x=x, y=y):
            return [["mousemove", str(x), str(y)]]
        case Click():
            click = ["click", "--repeat", str(action.count), "--delay", "80"]
            return [
                action.pointer() + _held(action.modifiers, [*click, str(BUTTONS[action.button])])
            ]
        case MouseDown() | MouseUp():
            verb = "mousedown" if isinstance(action, MouseDown) else "mouseup"
            return [[*action.pointer(), verb, str(BUTTONS[action.button])]]
        case Drag(path=path, button=button):
            (x0, y0), rest = path[0], path[1:]
            argv = ["mousemove", str(x0), str(y0), "mousedown", str(BUTTONS[button])]
            for x, y in rest:
                argv += ["sleep", "0.02", "mousemove", str(x), str(y)]
            return [[*argv, "sleep", "0.02", "mouseup", str(BUTTONS[button])]]
        case Scroll():
            wheel = ["click", "--repeat", str(action.amount), "--delay", "30"]
            return [
                action.pointer() + _held(action.modifiers, [*wheel, str(WHEEL[action.direction])])
            ]
        case Key(keys=keys):
            return [["key", "--delay", "20", "--", *keys.split()]]
        case HoldKey(keys=keys, duration=duration):
            names = keys.split()
            return [["keydown", *names, "sleep", f"{duration:g}", "keyup", *reversed(names)]]
        case Type(text=text, delay_ms=delay):
            chunks = [text[i : i + TYPE_CHUNK] for i in range(0, len(text), TYPE_CHUNK)]
            return [["type", "--delay", str(delay), "--", chunk] for chunk in chunks]
        case CursorPosition():
            return [["getmouselocation", "--shell"]]
        case ScreenSize():
            return [["getdisplaygeometry"]]
    return []


def unknown_key(stderr: str) -> str | None:
    """The key name xdotool did not know, from its complaint (it carries on without it)."""
    marker = "No such key name '"
    at = stderr.find(marker)
    if at < 0:
        return None
    return stderr[at + len(marker) :].split("'", 1)[0]


def parse_location(out: str) -> dict[str, int]:
    """``xdotool getmouselocation --shell`` (``X=12`` lines) as ``{"x": 12, "y": 34}``."""
    values = dict(line.split("=", 1) for line in out.split() if "=" in line)
    return {"x": int(values["X"]), "y": int(values["Y"])}


def parse_geometry(out: str) -> dict[str, int]:
    width, height = out.split()[:2]
    return {"width": int(width), "height": int(height)}


def parse_windows(listing: str, active: str) -> dict[str, object]:
    """``wmctrl -lpG`` rows and ``xdotool getactivewindow``'s id: the windows and which
    one has the focus."""
    windows = []
    for row in listing.splitlines():
        parts = row.split(None, 8)
        if len(parts) < 8:
            continue
        wid, desktop, pid, x, y, w, h = parts[:7]
        windows.append(
            {
                "id": int(wid, 16),
                "desktop": int(desktop),
                "pid": int(pid),
                "x": int(x),
                "y": int(y),
                "width": int(w),
                "height": int(h),
                "title": parts[8] if len(parts) > 8 else "",
            }
        )
    active_id = int(active) if active.strip().isdigit() else None
    found = next((w for w in windows if w["id"] == active_id), None)
    return {"windows": windows, "active": found}
