import pytest
import torch

from edlm.diffusion.schedules import SCHEDULES, LogLinearSchedule, get_schedule


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_endpoints_and_monotone(name):
    s = get_schedule(name)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    a = s.alpha(t)
    assert abs(float(a[0]) - 1.0) < 1e-3  # α_0 ≈ 1
    assert float(a[-1]) < 1.1e-3  # α_1 ≈ 0
    assert (a[1:] < a[:-1]).all()  # strictly decreasing
    torch.testing.assert_close(s.sigma(t), -torch.log(a))


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_alpha_prime_matches_autograd(name):
    s = get_schedule(name)
    t = torch.linspace(0.01, 0.99, 37, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(s.alpha(t).sum(), t)
    torch.testing.assert_close(s.alpha_prime(t.detach()), grad)
    assert (s.loss_weight(t.detach()) < 0).all()


def test_loglinear_weight_is_minus_one_over_t():
    s = LogLinearSchedule(eps=0.0)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(s.loss_weight(t), -1.0 / t)
    # masking probability is (1 − ε) t
    torch.testing.assert_close(LogLinearSchedule(1e-3).mask_prob(t), (1 - 1e-3) * t)


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        get_schedule("geometric")
    with pytest.raises(ValueError):
        LogLinearSchedule(eps=1.5)
