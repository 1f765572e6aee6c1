using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LoopRpt.Model;

/// <summary>RMSNorm as in the reference: statistics in float32, cast back, then scale (docs/method.md §1).</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly double _eps;

    public RmsNorm(long size, double eps, string name = "rms_norm", Device? device = null, ScalarType dtype = ScalarType.Float32) : base(name)
    {
        _eps = eps;
        weight = nn.Parameter(ones(size, dtype, device));
        RegisterComponents();
    }

    public Parameter Weight => weight;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var inputType = x.dtype;
        var x32 = x.to_type(ScalarType.Float32);
        var normed = x32 * rsqrt(x32.pow(2).mean([-1L], keepdim: true) + _eps);
        return (weight * normed.to_type(inputType)).MoveToOuterDisposeScope();
    }
}
