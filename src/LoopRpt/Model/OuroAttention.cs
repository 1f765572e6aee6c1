using LoopRpt.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Model;

/// <summary>Causal multi-head attention with grouped-query K/V, RoPE on q and k, no biases (docs/method.md §1).</summary>
public sealed class OuroAttention : nn.Module<Tensor, Tensor>
{
    internal readonly OuroLinear q_proj, k_proj, v_proj, o_proj;
    internal readonly int NumHeads, NumKvHeads, HeadDim;

    public OuroAttention(OuroConfig c, Device? device = null, ScalarType dtype = ScalarType.Float32) : base("self_attn")
    {
        NumHeads = c.NumAttentionHeads;
        NumKvHeads = c.NumKeyValueHeads;
        HeadDim = c.HeadDim;
        q_proj = new OuroLinear(c.HiddenSize, NumHeads * HeadDim, hasBias: false, device, dtype);
        k_proj = new OuroLinear(c.HiddenSize, NumKvHeads * HeadDim, hasBias: false, device, dtype);
        v_proj = new OuroLinear(c.HiddenSize, NumKvHeads * HeadDim, hasBias: false, device, dtype);
        o_proj = new OuroLinear(NumHeads * HeadDim, c.HiddenSize, hasBias: false, device, dtype);
        RegisterComponents();
    }

    /// <summary>Use <see cref="Forward"/>; positions must be supplied.</summary>
    public override Tensor forward(Tensor x) => throw new NotSupportedException("Call Forward(x, cos, sin).");

    /// <summary>x: (B, S, H); cos/sin: (S, D). Returns (B, S, H).</summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin)
    {
        var (q, k, v) = ProjectQkv(x, cos, sin);                    // (B, h, S, D), (B, kv, S, D) ×2
        var o = Attend(q, k, v, causal: true, mask: null);          // (B, h, S, D)
        return Output(o);
    }

    /// <summary>Projections with RoPE applied: q (B, h, S, D); k, v (B, kv, S, D).</summary>
    internal (Tensor Q, Tensor K, Tensor V) ProjectQkv(Tensor x, Tensor cos, Tensor sin)
    {
        long b = x.shape[0], s = x.shape[1];
        var q = q_proj.forward(x).view(b, s, NumHeads, HeadDim).transpose(1, 2);
        var k = k_proj.forward(x).view(b, s, NumKvHeads, HeadDim).transpose(1, 2);
        var v = v_proj.forward(x).view(b, s, NumKvHeads, HeadDim).transpose(1, 2);
        return (Rope.Apply(q, cos, sin), Rope.Apply(k, cos, sin), v);
    }

    /// <summary>
    /// Scaled dot-product attention, scale head_dim^-0.5. K/V heads are repeated for GQA. Either causal (query i sees
    /// keys 0..i, queries and keys aligned) or an explicit mask broadcast to (B, h, Sq, Sk): boolean (true = may attend) or an
    /// additive float bias (0 or -inf) in the query's type.
    /// </summary>
    internal Tensor Attend(Tensor q, Tensor k, Tensor v, bool causal, Tensor? mask)
    {
        // A decoding step on the CPU (one query per row, no gradients): the own kernel reads the cached keys and values
        // where they lie, grouped heads included (docs/benchmarks.md, "Issue 28, fifth round"); LOOPRPT_DECODE_KERNEL=torch
        // keeps libtorch's attention too.
        if (DecodeKernelPolicy.Mode != DecodeKernel.Torch && DecodeAttentionKernel.Supports(q, k, v, mask))
            return DecodeAttentionKernel.Attend(q, k, v, mask, causal && mask is null, get_num_threads());
        if (NumKvHeads != NumHeads)
        {
            int rep = NumHeads / NumKvHeads;
            k = k.repeat_interleave(rep, dim: 1);
            v = v.repeat_interleave(rep, dim: 1);
        }
        if (q.dtype == ScalarType.BFloat16 && q.device_type == DeviceType.CPU && q.shape[2] == 1 && !q.requires_grad)
        {
            // A decoding step (one query per row, no gradients) in bfloat16 on the CPU: libtorch's bfloat16 attention
            // there took 2.4× the float32 time at batch 8 (18 % of a step against 4 %, docs/benchmarks.md, "Issue 28,
            // fourth round"), so the step's attention runs in float32 on its bfloat16 inputs and is rounded back.
            using var scope = NewDisposeScope();
            var o = F.scaled_dot_product_attention(q.to_type(ScalarType.Float32), k.to_type(ScalarType.Float32), v.to_type(ScalarType.Float32),
                                                   mask?.to_type(mask.dtype == ScalarType.Bool ? ScalarType.Bool : ScalarType.Float32), 0.0, causal && mask is null);
            return o.to_type(ScalarType.BFloat16).MoveToOuterDisposeScope();
        }
        return F.scaled_dot_product_attention(q, k, v, mask, 0.0, causal && mask is null);
    }

    /// <summary>(B, h, S, D) → o_proj → (B, S, H).</summary>
    internal Tensor Output(Tensor o)
    {
        long b = o.shape[0], s = o.shape[2];
        return o_proj.forward(o.transpose(1, 2).reshape(b, s, NumHeads * HeadDim));
    }
}
