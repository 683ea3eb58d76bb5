"""The computer-use translators and checks, as pure logic (no VM): Anthropic's and
OpenAI's tool shapes to Sietch's actions, coordinates scaled, xdotool commands, images."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from sietch.core import computer, computer_use
from sietch.core.desktop import encode
from sietch.core.vnc import vnc_response
from sietch.errors import InvalidArgument, PayloadTooLarge

SAME = computer_use.Scaling.of(1280, 800, (None, None))
HALF = computer_use.Scaling.of(1280, 800, (640, 400))


def only(plan: computer_use.Plan) -> computer.Action:
    assert len(plan.actions) == 1
    return plan.actions[0]


def test_anthropic_clicks_map_to_button_and_count() -> None:
    """left/right/middle/double/triple_click become one click with its button and count."""
    cases = {
        "left_click": ("left", 1),
        "right_click": ("right", 1),
        "middle_click": ("middle", 1),
        "double_click": ("left", 2),
        "triple_click": ("left", 3),
    }
    for name, (button, count) in cases.items():
        click = only(computer_use.anthropic({"action": name, "coordinate": [10, 20]}, SAME))
        assert isinstance(click, computer.Click)
        assert (click.button, click.count, click.x, click.y) == (button, count, 10, 20)


def test_anthropic_coordinates_scale_up_to_the_real_screen() -> None:
    """A model told 640x400 clicking (320, 200) clicks the real 1280x800 screen's middle."""
    move = only(computer_use.anthropic({"action": "mouse_move", "coordinate": [320, 200]}, HALF))
    assert isinstance(move, computer.Move)
    assert (move.x, move.y) == (640, 400)
    assert HALF.to_model(640, 400) == (320, 200)


def test_anthropic_refuses_off_screen_and_unknown_actions() -> None:
    """A point outside the size the model was told, or an unknown action: InvalidArgument."""
    with pytest.raises(InvalidArgument, match="off the screen"):
        computer_use.anthropic({"action": "left_click", "coordinate": [640, 10]}, HALF)
    with pytest.raises(InvalidArgument, match="unknown computer action"):
        computer_use.anthropic({"action": "teleport"}, SAME)
    with pytest.raises(InvalidArgument, match="needs 'text'"):
        computer_use.anthropic({"action": "type"}, SAME)


def test_anthropic_drag_scroll_keys_and_text_answers() -> None:
    """drag, scroll, key, hold_key, cursor_position (a text answer) and zoom (a region)."""
    drag = only(
        computer_use.anthropic(
            {"action": "left_click_drag", "start_coordinate": [1, 2], "coordinate": [3, 4]}, SAME
        )
    )
    assert isinstance(drag, computer.Drag) and drag.path == [(1, 2), (3, 4)]
    scroll = only(
        computer_use.anthropic(
            {
                "action": "scroll",
                "coordinate": [5, 5],
                "scroll_direction": "up",
                "scroll_amount": 2,
            },
            SAME,
        )
    )
    assert isinstance(scroll, computer.Scroll) and (scroll.direction, scroll.amount) == ("up", 2)
    key = only(computer_use.anthropic({"action": "key", "text": "ctrl+l"}, SAME))
    assert isinstance(key, computer.Key) and key.keys == "ctrl+l"
    where = computer_use.anthropic({"action": "cursor_position"}, SAME)
    assert where.text == "X={x},Y={y}"
    zoom = computer_use.anthropic({"action": "zoom", "region": [0, 0, 319, 199]}, HALF)
    assert zoom.actions == [] and zoom.region == (0, 0, 639, 399)


def test_openai_actions_and_keys() -> None:
    """OpenAI's click/keypress/scroll/drag become Sietch actions with xdotool key names."""
    click = only(computer_use.openai({"type": "click", "x": 5, "y": 6, "button": "wheel"}, SAME))
    assert isinstance(click, computer.Click) and click.button == "middle"
    keys = only(computer_use.openai({"type": "keypress", "keys": ["CTRL", "L"]}, SAME))
    assert isinstance(keys, computer.Key) and keys.keys == "ctrl+l"
    assert computer_use.openai_key("ENTER") == "Return"
    assert computer_use.openai_key("ArrowLeft") == "Left"
    scroll = computer_use.openai({"type": "scroll", "x": 1, "y": 1, "scroll_y": 250}, SAME)
    assert [a.action for a in scroll.actions] == ["move", "scroll"]
    wheel = scroll.actions[1]
    assert isinstance(wheel, computer.Scroll) and (wheel.direction, wheel.amount) == ("down", 3)
    drag = only(
        computer_use.openai({"type": "drag", "path": [{"x": 1, "y": 1}, {"x": 9, "y": 9}]}, SAME)
    )
    assert isinstance(drag, computer.Drag) and drag.path == [(1, 1), (9, 9)]
    with pytest.raises(InvalidArgument, match="unknown button"):
        computer_use.openai({"type": "click", "x": 1, "y": 1, "button": "back"}, SAME)


def test_openai_call_item_and_output_shape() -> None:
    """A whole computer_call item is unwrapped; the output is a computer_call_output."""
    action, call_id = computer_use.openai_call(
        {"type": "computer_call", "call_id": "c1", "action": {"type": "screenshot"}}
    )
    assert action == {"type": "screenshot"} and call_id == "c1"
    out = computer_use.openai_output(b"\x89PNG", "c1")
    assert out["type"] == "computer_call_output" and out["call_id"] == "c1"
    assert out["output"]["image_url"].startswith("data:image/png;base64,")
    content = computer_use.anthropic_content(b"\x89PNG")
    assert content[0]["source"]["media_type"] == "image/png"
    assert computer_use.anthropic_content("X=1,Y=2") == [{"type": "text", "text": "X=1,Y=2"}]


def test_xdotool_commands() -> None:
    """Each action's xdotool arguments: pointer first, buttons by number, text in chunks."""
    click = computer.Click(action="click", x=3, y=4, button="right", count=2, modifiers="shift")
    assert computer.xdotool(click) == [
        ["mousemove", "3", "4", "keydown", "shift", "click", "--repeat", "2", "--delay", "80",
         "3", "keyup", "shift"]
    ]  # fmt: skip
    text = "x" * (computer.TYPE_CHUNK + 1)
    typed = computer.xdotool(computer.Type(action="type", text=text))
    assert [argv[-1] for argv in typed] == ["x" * computer.TYPE_CHUNK, "x"]
    with pytest.raises(InvalidArgument, match="both x and y"):
        computer.xdotool(computer.Click(action="click", x=3))


def test_checks_refuse_off_screen_points_and_huge_text() -> None:
    """A point off the screen names the screen's size; a huge text, or one whose key delays
    outlast an action, is 413, not a slow type."""
    with pytest.raises(InvalidArgument, match="1280x800"):
        computer.check(computer.Move(action="move", x=1280, y=0), 1280, 800)
    with pytest.raises(PayloadTooLarge):
        computer.check(computer.Type(action="type", text="a" * (computer.MAX_TYPE + 1)), 1280, 800)
    slow = computer.Type(action="type", text="a" * 6000)  # 12 ms apart: 72 s
    with pytest.raises(PayloadTooLarge, match="6000 characters 12 ms apart take 72 s"):
        computer.check(slow, 1280, 800)
    computer.check(slow.model_copy(update={"delay_ms": 0}), 1280, 800)
    assert computer.unknown_key("(symbol) No such key name 'Foo'. Ignoring it.") == "Foo"


def test_encode_region_scale_and_formats() -> None:
    """A region is cut, scale resizes, and each format decodes to what was asked for."""
    screen = Image.new("RGB", (100, 50), (10, 200, 30))
    screen.putpixel((60, 20), (255, 0, 0))
    png = Image.open(io.BytesIO(encode(screen, region=(50, 10, 20, 20))))
    assert png.size == (20, 20) and png.getpixel((10, 10)) == (255, 0, 0)
    half = Image.open(io.BytesIO(encode(screen, scale=0.5, fmt="jpeg")))
    assert half.format == "JPEG" and half.size == (50, 25)
    assert Image.open(io.BytesIO(encode(screen, fmt="webp"))).format == "WEBP"
    with pytest.raises(InvalidArgument, match="not inside"):
        encode(screen, region=(90, 0, 20, 10))


VNCDOTOOL_WARNING = "ignore:TripleDES has been moved"
"""vncdotool imports TripleDES from where cryptography deprecated it (not our code)."""


@pytest.mark.filterwarnings(VNCDOTOOL_WARNING)
def test_vnc_response_matches_vncdotool() -> None:
    """VNC authentication's DES (bit-reversed key bytes) answers as vncdotool's does."""
    from vncdotool import rfb  # an independent implementation: the desktop tests' client

    challenge = bytes(range(16))
    expected = rfb.des_encrypt(rfb._vnc_des("secret12"), challenge)
    assert vnc_response("secret12", challenge) == expected
    assert vnc_response("other", challenge) != expected


def test_pointer_actions_become_vnc_events() -> None:
    """Clicks, drags and scrolls at coordinates are RFB pointer events with the right masks;
    without coordinates, or with modifiers, they are left to xdotool (None)."""
    double = computer.Click(action="click", x=5, y=6, button="right", count=2)
    assert computer.pointer_events(double, 0) == (
        [[(5, 6, 0), (5, 6, 4), (5, 6, 0), (5, 6, 4), (5, 6, 0)]],
        0,
    )
    drag = computer.Drag(action="drag", path=[(1, 1), (5, 5), (9, 9)])
    assert computer.pointer_events(drag, 0) == (
        [[(1, 1, 0), (1, 1, 1)], [(5, 5, 1), (9, 9, 1)], [(9, 9, 0)]],
        0,
    )
    down = computer.MouseDown(action="mouse_down", x=2, y=3)
    assert computer.pointer_events(down, 0) == ([[(2, 3, 0), (2, 3, 1)]], 1)
    wheel = computer.Scroll(action="scroll", x=1, y=2, direction="up", amount=2)
    assert computer.pointer_events(wheel, 0) == (
        [[(1, 2, 0), (1, 2, 8), (1, 2, 0), (1, 2, 8), (1, 2, 0)]],
        0,
    )
    assert computer.pointer_events(computer.Click(action="click"), 0) is None
    shifted = computer.Click(action="click", x=1, y=1, modifiers="shift")
    assert computer.pointer_events(shifted, 0) is None
