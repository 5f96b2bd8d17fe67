"""The ε explorer: readable without a kernel, saved at a non-zero ε, redraws on the slider, refuses bad input.

Its live rendering in JupyterLab is checked in a real browser by `tests/test_browser.py`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from s2o_lib import widgets
from s2o_lib.errors import S2OError


@pytest.fixture
def tiny():
    """A linear classifier on 8×8 one-channel images and a batch of 6 (no training needed)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    yield model, torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    plt.close("all")


def test_repr_says_what_it_is_and_that_it_needs_a_kernel(tiny):
    explorer = widgets.epsilon_explorer(*tiny, max_eps=0.3, attack="pgd")
    text = explorer._repr_mimebundle_()["text/plain"]
    assert text == repr(explorer), "ipywidgets cut text/plain at 110 characters: the sentence must fit"
    assert text.startswith("ε-explorer: a slider over the PGD radius ε")
    assert "0.150" in text and "0.300" in text and "run the notebook" in text
    assert "interactive(" not in text and "FloatSlider" not in text


def test_starts_at_a_non_zero_eps_with_a_wide_track(tiny):
    slider = widgets.epsilon_explorer(*tiny, max_eps=0.3).kwargs_widgets[0]
    assert slider.value == pytest.approx(0.15) and slider.max == pytest.approx(0.3)
    assert slider.step == pytest.approx(0.01)
    assert slider.layout.width == "48em" and slider.style.description_width == "initial"
    explicit = widgets.epsilon_explorer(*tiny, max_eps=0.3, eps=0.1, width="50em").kwargs_widgets[0]
    assert explicit.value == pytest.approx(0.1) and explicit.layout.width == "50em"


def test_moving_the_slider_redraws_at_the_new_eps(tiny, monkeypatch):
    drawn = []
    monkeypatch.setattr(widgets, "epsilon_figure", lambda *args, eps, **kwargs: drawn.append(eps))
    explorer = widgets.epsilon_explorer(*tiny, max_eps=0.3, eps=0.1)
    explorer.kwargs_widgets[0].value = 0.2
    assert drawn == [pytest.approx(0.1), pytest.approx(0.2)]


def test_epsilon_figure_draws_clean_and_adversarial_rows(tiny):
    fig = widgets.epsilon_figure(*tiny, eps=0.1, n=4)
    assert len(fig.axes) == 8 and "FGSM at ε = 0.100" in fig._suptitle.get_text()


@pytest.mark.parametrize("kwargs, message", [
    ({"max_eps": 0.0}, "max_eps must be > 0"),
    ({"max_eps": 0.3, "eps": 0.5}, "eps must lie in"),
    ({"max_eps": 0.3, "eps": -0.1}, "eps must lie in"),
    ({"attack": "cw"}, "attack must be 'fgsm' or 'pgd'"),
])
def test_bad_input_is_one_line_that_says_what_to_do(tiny, kwargs, message):
    with pytest.raises(S2OError, match=message):
        widgets.epsilon_explorer(*tiny, **kwargs)
