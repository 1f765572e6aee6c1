using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LoopRpt.Model;

/// <summary>RMSNorm as in the reference: statistics in float32, cast back, then scale (docs/method.md §1).</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    // Held for the module's lifetime: a Scalar converted implicitly for one call can be finalized by the GC while the
    // native call still reads it (seen as "INTERNAL ASSERT FAILED at c10/core/Scalar.h" in x.pow(2) under GC pressure).
    // TorchSharp's add_(Scalar) passes an implicit alpha of 1, so the alpha is the held one (docs/platform.md §2).
    private readonly Scalar _epsScalar;

    public RmsNorm(long size, double eps, string name = "rms_norm", Device? device = null, ScalarType dtype = ScalarType.Float32) : base(name)
    {
        _epsScalar = eps.ToScalar();
        weight = nn.Parameter(ones(size, dtype, device));
        RegisterComponents();
    }

    public Parameter Weight => weight;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var inputType = x.dtype;
        var x32 = x.to_type(ScalarType.Float32);
        var normed = x32 * rsqrt(x32.mul(x32).mean([-1L], keepdim: true).add_(_epsScalar, HeldScalars.One));   // no per-call Scalar
        return (weight * normed.to_type(inputType)).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _epsScalar.Dispose();
        base.Dispose(disposing);
    }
}
