"""Anthropic's and OpenAI's computer-use tool shapes, translated to Sietch's actions (pure).

:func:`anthropic` takes the input of Anthropic's computer tool as the model
wrote it (``computer_20250124``, and ``zoom`` of ``computer_20251124``);
:func:`openai` an OpenAI ``computer_use_preview`` action (or the whole
``computer_call`` item). Both return a :class:`Plan`: the Sietch actions to
run, and what to answer (a screenshot, optionally of a region, or a text).

Coordinates: the model sees the screen at the size it was told
(``display_width_px``/``display_height_px`` of the tool), which may be smaller
than the real one: :class:`Scaling` maps its coordinates up and the
screenshots down.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any

from sietch.core import computer
from sietch.errors import InvalidArgument


@dataclass(frozen=True)
class Scaling:
    """The real screen and the size the model was told it has."""

    width: int
    height: int
    model_width: int
    model_height: int

    @classmethod
    def of(cls, width: int, height: int, model: tuple[int | None, int | None]) -> Scaling:
        mw, mh = model
        if (mw is None) != (mh is None):
            raise InvalidArgument("give both display_width and display_height, or neither")
        if mw is None or mh is None:
            return cls(width, height, width, height)
        if not (1 <= mw <= 65535 and 1 <= mh <= 65535):
            raise InvalidArgument(f"display size {mw}x{mh} is not a screen size")
        return cls(width, height, mw, mh)

    def to_screen(self, x: Any, y: Any) -> tuple[int, int]:
        """A point of the model's screen on the real one; off the model's screen: refused."""
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y)):
            raise InvalidArgument(f"a coordinate is two numbers, not {[x, y]!r}")
        if not (0 <= x < self.model_width and 0 <= y < self.model_height):
            raise InvalidArgument(
                f"({x}, {y}) is off the screen, which is {self.model_width}x{self.model_height}",
                width=self.model_width,
                height=self.model_height,
            )
        sx, sy = self.width / self.model_width, self.height / self.model_height
        return min(int(x * sx), self.width - 1), min(int(y * sy), self.height - 1)

    def to_model(self, x: int, y: int) -> tuple[int, int]:
        return (
            round(x * self.model_width / self.width),
            round(y * self.model_height / self.height),
        )

    @property
    def model_size(self) -> tuple[int, int]:
        return self.model_width, self.model_height


@dataclass
class Plan:
    """What to do, and what to answer once done."""

    actions: list[computer.Action] = field(default_factory=list)
    text: str | None = None
    """Answer with this text (``cursor_position``; ``{x}``/``{y}`` from the last action's
    result, in the model's coordinates) instead of a screenshot."""
    region: tuple[int, int, int, int] | None = None
    """Answer with a screenshot of this part of the screen (x, y, width, height)."""


def _action(**fields: Any) -> computer.Action:
    return computer.parse_action(fields)


def _point(given: dict[str, Any], key: str, scaling: Scaling) -> dict[str, int]:
    value = given.get(key)
    if value is None:
        return {}
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidArgument(f"{key} is [x, y], not {value!r}")
    x, y = scaling.to_screen(*value)
    return {"x": x, "y": y}


def _text(given: dict[str, Any], action: str) -> str:
    text = given.get("text")
    if not isinstance(text, str) or not text:
        raise InvalidArgument(f"{action} needs 'text'")
    return text


_CLICKS = {
    "left_click": ("left", 1),
    "right_click": ("right", 1),
    "middle_click": ("middle", 1),
    "double_click": ("left", 2),
    "triple_click": ("left", 3),
}


def anthropic(given: dict[str, Any], scaling: Scaling) -> Plan:
    """The plan for one input of Anthropic's computer tool."""
    if not isinstance(given, dict):
        raise InvalidArgument("the input is an object with an 'action'")
    name = given.get("action")
    at = _point(given, "coordinate", scaling)
    if name in _CLICKS:
        button, count = _CLICKS[name]
        modifiers = given.get("text") or None
        return Plan(
            [_action(action="click", button=button, count=count, modifiers=modifiers, **at)]
        )
    plan = _anthropic_pointer(name, given, at, scaling)
    return plan if plan is not None else _anthropic_other(name, given, scaling)


def _anthropic_pointer(
    name: Any, given: dict[str, Any], at: dict[str, int], scaling: Scaling
) -> Plan | None:
    match name:
        case "mouse_move":
            if not at:
                raise InvalidArgument("mouse_move needs 'coordinate'")
            return Plan([_action(action="move", **at)])
        case "left_click_drag":
            start = _point(given, "start_coordinate", scaling)
            if not start or not at:
                raise InvalidArgument("left_click_drag needs 'start_coordinate' and 'coordinate'")
            path = [(start["x"], start["y"]), (at["x"], at["y"])]
            return Plan([_action(action="drag", path=path)])
        case "left_mouse_down" | "left_mouse_up":
            verb = "mouse_down" if name == "left_mouse_down" else "mouse_up"
            return Plan([_action(action=verb, **at)])
        case "scroll":
            fields = {
                "direction": given.get("scroll_direction", "down"),
                "amount": given.get("scroll_amount", 3),
                "modifiers": given.get("text") or None,
            }
            return Plan([_action(action="scroll", **fields, **at)])
    return None


def _anthropic_other(name: Any, given: dict[str, Any], scaling: Scaling) -> Plan:
    match name:
        case "screenshot":
            return Plan()
        case "key":
            return Plan([_action(action="key", keys=_text(given, name))])
        case "type":
            return Plan([_action(action="type", text=_text(given, name))])
        case "hold_key":
            keys = _text(given, name)
            return Plan([_action(action="hold_key", keys=keys, duration=given.get("duration"))])
        case "wait":
            return Plan([_action(action="wait", duration=given.get("duration", 1.0))])
        case "cursor_position":
            return Plan([_action(action="cursor_position")], text="X={x},Y={y}")
        case "zoom":
            return Plan(region=_region(given.get("region"), scaling))
    raise InvalidArgument(f"unknown computer action {name!r}", action=name)


def _region(value: Any, scaling: Scaling) -> tuple[int, int, int, int]:
    """zoom's ``[x0, y0, x1, y1]`` (model coordinates) as x, y, width, height on the screen."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise InvalidArgument(f"zoom needs 'region': [x0, y0, x1, y1], not {value!r}")
    x0, y0 = scaling.to_screen(value[0], value[1])
    x1, y1 = scaling.to_screen(
        min(value[2], scaling.model_width - 1), min(value[3], scaling.model_height - 1)
    )
    if x1 <= x0 or y1 <= y0:
        raise InvalidArgument(f"zoom region {list(value)} is empty: x1 > x0 and y1 > y0")
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


# OpenAI names keys as a browser does (Playwright's names, upper-cased): xdotool's names.
_OPENAI_KEYS = {
    "CTRL": "ctrl",
    "CONTROL": "ctrl",
    "ALT": "alt",
    "OPTION": "alt",
    "SHIFT": "shift",
    "CMD": "super",
    "META": "super",
    "SUPER": "super",
    "WIN": "super",
    "ENTER": "Return",
    "RETURN": "Return",
    "ESC": "Escape",
    "ESCAPE": "Escape",
    "TAB": "Tab",
    "SPACE": "space",
    "BACKSPACE": "BackSpace",
    "DELETE": "Delete",
    "DEL": "Delete",
    "INSERT": "Insert",
    "HOME": "Home",
    "END": "End",
    "PAGEUP": "Prior",
    "PAGEDOWN": "Next",
    "ARROWUP": "Up",
    "ARROWDOWN": "Down",
    "ARROWLEFT": "Left",
    "ARROWRIGHT": "Right",
    "UP": "Up",
    "DOWN": "Down",
    "LEFT": "Left",
    "RIGHT": "Right",
    "CAPSLOCK": "Caps_Lock",
}
_OPENAI_BUTTONS = {"left": "left", "right": "right", "wheel": "middle", "middle": "middle"}
SCROLL_STEP = 100
"""Pixels of an OpenAI scroll per wheel click."""


def openai_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"a key is a name, not {key!r}")
    upper = key.upper()
    if upper in _OPENAI_KEYS:
        return _OPENAI_KEYS[upper]
    if len(key) == 1:
        return key.lower() if key.isalpha() else key
    if upper.startswith("F") and upper[1:].isdigit():
        return upper
    return key


def _xy(given: dict[str, Any], scaling: Scaling) -> dict[str, int]:
    if "x" not in given or "y" not in given:
        raise InvalidArgument(f"{given.get('type')} needs 'x' and 'y'")
    x, y = scaling.to_screen(given["x"], given["y"])
    return {"x": x, "y": y}


def openai(given: dict[str, Any], scaling: Scaling) -> Plan:
    """The plan for one OpenAI ``computer_use_preview`` action."""
    if not isinstance(given, dict):
        raise InvalidArgument("the action is an object with a 'type'")
    name = given.get("type")
    match name:
        case "screenshot":
            return Plan()
        case "click":
            return Plan([_openai_click(given, scaling)])
        case "double_click":
            return Plan([_action(action="click", count=2, **_xy(given, scaling))])
        case "move":
            return Plan([_action(action="move", **_xy(given, scaling))])
        case "drag":
            path = given.get("path")
            if not isinstance(path, list) or len(path) < 2:
                raise InvalidArgument("drag needs a 'path' of at least two {x, y} points")
            points = [tuple(_xy(p, scaling).values()) for p in path if isinstance(p, dict)]
            return Plan([_action(action="drag", path=points)])
        case "keypress":
            keys = given.get("keys")
            if not isinstance(keys, list) or not keys:
                raise InvalidArgument("keypress needs 'keys', a list of key names")
            return Plan([_action(action="key", keys="+".join(openai_key(k) for k in keys))])
        case "type":
            return Plan([_action(action="type", text=_text(given, name))])
        case "scroll":
            return Plan(_scrolls(given, scaling))
        case "wait":
            return Plan([_action(action="wait", duration=given.get("ms", 1000) / 1000)])
    raise InvalidArgument(f"unknown computer action {name!r}", action=name)


def _openai_click(given: dict[str, Any], scaling: Scaling) -> computer.Action:
    button = given.get("button", "left")
    if button not in _OPENAI_BUTTONS:
        raise InvalidArgument(f"unknown button {button!r}: left, right, wheel")
    return _action(action="click", button=_OPENAI_BUTTONS[button], **_xy(given, scaling))


def _scrolls(given: dict[str, Any], scaling: Scaling) -> list[computer.Action]:
    at = _xy(given, scaling)
    actions = [_action(action="move", **at)]
    for axis, (negative, positive) in (
        ("scroll_y", ("up", "down")),
        ("scroll_x", ("left", "right")),
    ):
        amount = given.get(axis, 0) or 0
        if not isinstance(amount, int | float):
            raise InvalidArgument(f"{axis} is a number of pixels, not {amount!r}")
        if amount:
            clicks = min(math.ceil(abs(amount) / SCROLL_STEP), 100)
            direction = positive if amount > 0 else negative
            actions.append(_action(action="scroll", direction=direction, amount=clicks))
    return actions


def fitted(size: tuple[int, int], into: tuple[int, int]) -> tuple[int, int]:
    """``size`` scaled to fit ``into``, keeping its aspect ratio (zoom's answer)."""
    factor = min(into[0] / size[0], into[1] / size[1])
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def anthropic_content(answer: str | bytes) -> list[dict[str, Any]]:
    """The ``content`` of the ``tool_result`` an agent loop sends back for the input."""
    if isinstance(answer, str):
        return [{"type": "text", "text": answer}]
    data = base64.b64encode(answer).decode()
    return [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
    ]


def openai_output(answer: bytes, call_id: str | None) -> dict[str, Any]:
    """The ``computer_call_output`` item for the call."""
    url = "data:image/png;base64," + base64.b64encode(answer).decode()
    output: dict[str, Any] = {"type": "computer_call_output"}
    if call_id is not None:
        output["call_id"] = call_id
    output["output"] = {"type": "input_image", "image_url": url}
    return output


def openai_call(body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The action and call id of a ``computer_call`` item, or a bare action as is."""
    if isinstance(body, dict) and body.get("type") == "computer_call":
        action = body.get("action")
        if not isinstance(action, dict):
            raise InvalidArgument("a computer_call carries an 'action' object")
        call_id = body.get("call_id")
        return action, call_id if isinstance(call_id, str) else None
    return body, None
