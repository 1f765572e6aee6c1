using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Model;

/// <summary>
/// y = x Wᵀ (+ b), with the parameters named <c>weight</c> (out, in) and <c>bias</c> (out) like <c>nn.Linear</c> and the
/// reference checkpoint. Unlike <c>nn.Linear</c> it draws nothing: parameters are allocated uninitialized and the
/// owning model either initializes them (<see cref="OuroForCausalLM"/>'s Initialize) or a loader overwrites them, so
/// loading 1.4B parameters does not first draw 1.4B kaiming-uniform numbers.
/// </summary>
/// <remarks>
/// bfloat16 weights with float32 inputs run "bfloat16 storage, float32 compute" (<see cref="BFloat16Compute.Float32"/>):
/// on a CPU without gradients, a few rows (decode) go through <see cref="BFloat16Kernels.Linear"/>, which reads the weights
/// as 2 bytes each and accumulates in float32; more rows (prefill, scoring) widen the weight to float32 one cache-sized
/// block at a time and use libtorch's float32 matrix product (<see cref="BFloat16Kernels.LinearBlocked"/>). Elsewhere
/// (other devices, gradients) the whole weight is widened for the product. Matching dtypes take the plain <c>F.linear</c>.
/// </remarks>
public sealed class OuroLinear : nn.Module<Tensor, Tensor>
{
    /// <summary>Up to this many rows use the bfloat16 kernel; above it the weight is widened block by block.</summary>
    internal const int KernelMaxRows = 8;

    // Field names are the state-dict keys (RegisterComponents).
    internal Parameter weight;
    internal readonly Parameter? bias;

    public OuroLinear(long inFeatures, long outFeatures, bool hasBias, Device? device = null, ScalarType dtype = ScalarType.Float32)
        : base("Linear")
    {
        weight = new Parameter(empty([outFeatures, inFeatures], dtype, device));
        if (hasBias) bias = new Parameter(empty([outFeatures], dtype, device));
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        RegisterComponents();
    }

    public long InFeatures { get; }

    public long OutFeatures { get; }

    /// <summary>The weight, (out, in).</summary>
    public Parameter Weight => weight;

    /// <summary>The bias, (out), or null without one.</summary>
    public Parameter? Bias => bias;

    /// <summary>Replaces (and disposes) the weight with a parameter of the same shape: how a tied LM head shares the embedding.</summary>
    internal void ShareWeight(Parameter shared)
    {
        ArgumentNullException.ThrowIfNull(shared);
        if (!shared.shape.SequenceEqual(weight.shape))
            throw new ArgumentException($"Expected a weight of shape ({string.Join(", ", weight.shape)}), got ({string.Join(", ", shared.shape)}).", nameof(shared));
        if (ReferenceEquals(shared, weight)) return;
        weight.Dispose();
        weight = shared;
        ConditionallyRegisterParameter(nameof(weight), shared);
    }

    /// <summary>x: (..., in) → (..., out).</summary>
    public override Tensor forward(Tensor x)
    {
        if (x.dtype == ScalarType.Float32 && weight.dtype == ScalarType.BFloat16) return Float32FromBFloat16(x);
        return F.linear(x, weight, bias);
    }

    /// <summary>bfloat16 weights, float32 activations: the bfloat16 kernels on a CPU without gradients, else a widened weight.</summary>
    private Tensor Float32FromBFloat16(Tensor x)
    {
        long rows = x.numel() / InFeatures;
        if (x.device_type == DeviceType.CPU && weight.device_type == DeviceType.CPU && !is_grad_enabled() && BFloat16Kernels.IsSupported)
        {
            var shape = x.shape.ToArray();
            shape[^1] = OutFeatures;
            var x2 = x.reshape(rows, InFeatures);
            var y = rows <= KernelMaxRows ? BFloat16Kernels.Linear(x2, weight, bias) : BFloat16Kernels.LinearBlocked(x2, weight, bias);
            return y.view(shape);
        }
        // Other devices, training, CPUs without AVX2: widen the whole weight for this product (differentiable).
        using var scope = NewDisposeScope();
        var w = weight.to_type(ScalarType.Float32);                     // (out, in), lives for this product only
        return F.linear(x, w, bias?.to_type(ScalarType.Float32)).MoveToOuterDisposeScope();
    }
}
