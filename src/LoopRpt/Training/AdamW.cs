using TorchSharp.Modules;
using TorchSharp;
using static TorchSharp.torch;

namespace LoopRpt.Training;

/// <summary>
/// AdamW with decoupled weight decay and two parameter groups (nanoGPT's rule: matrices decay; norms, biases and
/// other vectors do not). Written here rather than taken from TorchSharp so that its moments are named after the
/// parameters and checkpoint to safetensors, and so that moments stay float32 when the model is bfloat16.
/// </summary>
public sealed class AdamW : IDisposable
{
    private readonly List<Slot> _slots;
    private readonly double _beta1, _beta2, _eps, _weightDecay;

    private sealed record Slot(string Name, Parameter Param, bool Decay, Tensor ExpAvg, Tensor ExpAvgSq);

    public AdamW(IEnumerable<(string Name, Parameter Param)> parameters, double beta1 = 0.9, double beta2 = 0.95, double eps = 1e-8, double weightDecay = 0.1)
    {
        _beta1 = beta1;
        _beta2 = beta2;
        _eps = eps;
        _weightDecay = weightDecay;
        _slots = parameters.Select(p => new Slot(p.Name, p.Param, p.Param.dim() >= 2,
            zeros_like(p.Param, dtype: ScalarType.Float32).DetachFromDisposeScope(),
            zeros_like(p.Param, dtype: ScalarType.Float32).DetachFromDisposeScope())).ToList();
    }

    /// <summary>Optimizer steps taken (for bias correction).</summary>
    public long StepCount { get; private set; }

    public IEnumerable<Parameter> Parameters => _slots.Select(s => s.Param);

    /// <summary>Names of the parameters that receive weight decay.</summary>
    public IEnumerable<string> DecayedParameterNames => _slots.Where(s => s.Decay).Select(s => s.Name);

    public void ZeroGrad()
    {
        foreach (var s in _slots) s.Param.grad = null;
    }

    /// <summary>One update with learning rate <paramref name="lr"/>; parameters without a gradient are left alone.</summary>
    public void Step(double lr)
    {
        StepCount++;
        double bc1 = 1 - Math.Pow(_beta1, StepCount), bc2 = 1 - Math.Pow(_beta2, StepCount);
        // Held for the step (not converted per call): a temporary Scalar can be finalized while the native call reads it.
        using Scalar beta1 = _beta1, oneMinusBeta1 = 1 - _beta1, beta2 = _beta2, oneMinusBeta2 = 1 - _beta2, biasCorrection2 = bc2, eps = _eps,
                     stepSize = lr / bc1, decay = 1 - lr * _weightDecay, one = 1;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        foreach (var s in _slots)
        {
            var grad = s.Param.grad;
            if (grad is null) continue;
            var g = grad.to_type(ScalarType.Float32);
            s.ExpAvg.mul_(beta1).add_(g, alpha: oneMinusBeta1);
            s.ExpAvgSq.mul_(beta2).addcmul_(g, g, value: oneMinusBeta2);
            var denom = s.ExpAvgSq.div(biasCorrection2).sqrt_().add_(eps, one);     // explicit alpha: add_(eps) would create one
            var update = s.ExpAvg.div(denom).mul(stepSize);
            if (s.Decay && _weightDecay != 0) s.Param.mul_(decay);
            s.Param.sub_(update.to_type(s.Param.dtype));
        }
    }

    /// <summary>Moments as named tensors for a checkpoint: <c>exp_avg.NAME</c>, <c>exp_avg_sq.NAME</c>.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> StateTensors()
    {
        foreach (var s in _slots)
        {
            yield return ("exp_avg." + s.Name, s.ExpAvg);
            yield return ("exp_avg_sq." + s.Name, s.ExpAvgSq);
        }
    }

    /// <summary>Restores moments and the step count saved by <see cref="StateTensors"/>.</summary>
    public void LoadState(Func<string, Tensor, bool> copyInto, long stepCount)
    {
        foreach (var s in _slots)
        {
            if (!copyInto("exp_avg." + s.Name, s.ExpAvg) || !copyInto("exp_avg_sq." + s.Name, s.ExpAvgSq))
                throw new InvalidDataException($"The optimizer state has no moments for parameter '{s.Name}'.");
        }
        StepCount = stepCount;
    }

    public void Dispose()
    {
        foreach (var s in _slots)
        {
            s.ExpAvg.Dispose();
            s.ExpAvgSq.Dispose();
        }
    }
}
