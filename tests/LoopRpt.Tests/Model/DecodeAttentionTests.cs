using LoopRpt.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Model;

/// <summary>A bfloat16 decoding step's attention (one query per row, no gradients, CPU) runs in float32 on its bfloat16
/// inputs (<see cref="OuroAttention"/>): checked against softmax(q·kᵀ/√D + bias)·v computed in float64 by hand, with the
/// GQA heads repeated, an additive bias (one row's keys partly masked) and a boolean mask.</summary>
public class DecodeAttentionTests
{
    static DecodeAttentionTests() => LoopRpt.Native.TorchNative.EnsureLoaded();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BFloat16DecodeStepMatchesAFloat64Softmax(bool boolMask)
    {
        using var scope = NewDisposeScope();
        var c = OuroConfig.Tiny();                                   // 4 heads, 2 key/value heads, head dim 16
        using var attn = new OuroAttention(c, dtype: ScalarType.BFloat16);
        using var g = new Generator(23);
        long b = 3, len = 7, h = c.NumAttentionHeads, kv = c.NumKeyValueHeads, d = c.HiddenSize / h;
        var q = randn([b, h, 1, d], generator: g).to_type(ScalarType.BFloat16);
        var k = randn([b, kv, len, d], generator: g).to_type(ScalarType.BFloat16);
        var v = randn([b, kv, len, d], generator: g).to_type(ScalarType.BFloat16);
        // Row 1 may not see its last three keys.
        var visible = ones([b, 1, 1, len], ScalarType.Bool);
        visible[1, 0, 0, TensorIndex.Slice(len - 3)] = false;
        var mask = boolMask ? visible : where(visible, zeros([b, 1, 1, len]), full([b, 1, 1, len], double.NegativeInfinity)).to_type(ScalarType.BFloat16);

        var o = attn.Attend(q, k, v, causal: false, mask: mask);
        Assert.Equal(ScalarType.BFloat16, o.dtype);
        Assert.Equal(new long[] { b, h, 1, d }, o.shape);

        // float64 by hand: each query head reads key/value head (head / (h / kv)).
        var qd = q.to_type(ScalarType.Float64);
        var kd = k.to_type(ScalarType.Float64).repeat_interleave(h / kv, dim: 1);
        var vd = v.to_type(ScalarType.Float64).repeat_interleave(h / kv, dim: 1);
        var scores = qd.matmul(kd.transpose(2, 3)) / Math.Sqrt(d);
        scores = scores.masked_fill(visible.logical_not(), double.NegativeInfinity);
        var expected = scores.softmax(-1).matmul(vd);
        // The float32 result rounded to bfloat16: 2⁻⁸ relative, plus float32 noise.
        var diff = (o.to_type(ScalarType.Float64) - expected).abs();
        var allowed = expected.abs() * (1.0 / 256) + 1e-4;
        Assert.True(diff.le(allowed).all().item<bool>(), $"largest error {diff.max().item<double>():G3}");
        // The masked keys carry no weight: row 1's output is what its first len - 3 keys alone give.
        var alone = (qd[1].matmul(kd[1, TensorIndex.Colon, TensorIndex.Slice(0, len - 3)].transpose(1, 2)) / Math.Sqrt(d))
            .softmax(-1).matmul(vd[1, TensorIndex.Colon, TensorIndex.Slice(0, len - 3)]);
        Assert.True((o[1].to_type(ScalarType.Float64) - alone).abs().le(alone.abs() * (1.0 / 256) + 1e-4).all().item<bool>());
    }
}
