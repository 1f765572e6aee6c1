using LoopRpt.Model.Kernels;
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
/// On a CPU without gradients, a few rows (a decoding step, up to <see cref="DecodeKernelPolicy.MaxRows"/>) go where
/// <see cref="DecodeKernelPolicy"/> sends them: libtorch or the own weight-streaming kernel, whichever was measured faster
/// for the shape. bfloat16 weights with float32 inputs run "bfloat16 storage, float32 compute"
/// (<see cref="BFloat16Compute.Float32"/>): a few rows always take the own kernel, which reads the weights as 2 bytes
/// each and accumulates in float32; more rows (prefill, scoring) widen the weight to float32 one cache-sized block at a
/// time and use libtorch's float32 matrix product (<see cref="BFloat16Kernels.LinearBlocked"/>). Elsewhere (other
/// devices, gradients) the whole weight is widened for the product. Matching dtypes take the plain <c>F.linear</c>.
/// </remarks>
public sealed class OuroLinear : nn.Module<Tensor, Tensor>
{
    // Field names are the state-dict keys (RegisterComponents).
    internal Parameter weight;
    internal readonly Parameter? bias;

    public OuroLinear(long inFeatures, long outFeatures, bool hasBias, Device? device = null, ScalarType dtype = ScalarType.Float32)
        : base("Linear")
    {
        weight = new Parameter(empty([outFeatures, inFeatures], dtype, device));
        HugePages.Mark(weight);                                    // before anything is written to it
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

    /// <summary>Who runs this layer's decode products; null follows <see cref="DecodeKernelPolicy.Mode"/> (tests force either).</summary>
    internal DecodeKernel? DecodeKernel { get; set; }

    /// <summary>x: (..., in) → (..., out).</summary>
    public override Tensor forward(Tensor x)
    {
        long rows = x.numel() / InFeatures;
        bool cpuInference = x.device_type == DeviceType.CPU && weight.device_type == DeviceType.CPU && !is_grad_enabled();
        if (cpuInference && rows <= DecodeKernelPolicy.MaxRows
            && DecodeKernelPolicy.TryLinear(x.reshape(rows, InFeatures), weight, bias, DecodeKernel ?? DecodeKernelPolicy.Mode) is { } y)
            return y.view(OutShape(x));                                                     // (..., out)
        if (x.dtype == ScalarType.Float32 && weight.dtype == ScalarType.BFloat16) return Float32FromBFloat16(x, rows, cpuInference);
        return F.linear(x, weight, bias);
    }

    private long[] OutShape(Tensor x)
    {
        var shape = x.shape.ToArray();
        shape[^1] = OutFeatures;
        return shape;
    }

    /// <summary>bfloat16 weights, float32 activations, many rows: widened block by block on a CPU without gradients,
    /// else a widened weight.</summary>
    private Tensor Float32FromBFloat16(Tensor x, long rows, bool cpuInference)
    {
        if (cpuInference && BFloat16Kernels.IsSupported)
            return BFloat16Kernels.LinearBlocked(x.reshape(rows, InFeatures), weight, bias).view(OutShape(x));
        // Other devices, training, CPUs without AVX2: widen the whole weight for this product (differentiable).
        using var scope = NewDisposeScope();
        var w = weight.to_type(ScalarType.Float32);                     // (out, in), lives for this product only
        return F.linear(x, w, bias?.to_type(ScalarType.Float32)).MoveToOuterDisposeScope();
    }
}
