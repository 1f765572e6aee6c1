using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Model;

public class ModelStructureTests
{
    [Fact]
    public void ParameterSetDoesNotDependOnLoopCount()
    {
        using var one = TestUtil.TinyModel(loops: 1);
        using var four = TestUtil.TinyModel(loops: 4);
        var a = one.UniqueParameters().Select(p => (p.Name, string.Join("x", p.Param.shape))).ToList();
        var b = four.UniqueParameters().Select(p => (p.Name, string.Join("x", p.Param.shape))).ToList();
        Assert.Equal(a, b);
    }

    [Fact]
    public void ParameterNamesAreTheReferenceCheckpointKeys()
    {
        using var lm = TestUtil.TinyModel();
        var names = lm.UniqueParameters().Select(p => p.Name).ToHashSet();
        var expected = new List<string> { "model.embed_tokens.weight", "model.norm.weight", "model.early_exit_gate.weight", "model.early_exit_gate.bias", "lm_head.weight" };
        for (int i = 0; i < 2; i++)
        {
            foreach (var p in new[] { "q", "k", "v", "o" }) expected.Add($"model.layers.{i}.self_attn.{p}_proj.weight");
            foreach (var p in new[] { "gate", "up", "down" }) expected.Add($"model.layers.{i}.mlp.{p}_proj.weight");
            foreach (var n in new[] { "input_layernorm", "input_layernorm_2", "post_attention_layernorm", "post_attention_layernorm_2" })
                expected.Add($"model.layers.{i}.{n}.weight");
        }
        Assert.Equal(expected.Order(), names.Order());
        Assert.Equal(new long[] { 16, 32 }, lm.UniqueParameters().Single(p => p.Name == "model.layers.0.self_attn.k_proj.weight").Param.shape); // GQA: 2 kv heads × 8
        Assert.Equal(new long[] { 1, 32 }, lm.UniqueParameters().Single(p => p.Name == "model.early_exit_gate.weight").Param.shape);
        Assert.Equal(lm.Config.ParameterCount(), lm.UniqueParameters().Sum(p => p.Param.numel()));
    }

    [Fact]
    public void TiedHeadSharesTheEmbedding()
    {
        using var lm = TestUtil.TinyModel(tie: true);
        Assert.DoesNotContain(lm.UniqueParameters(), p => p.Name == "lm_head.weight");
        using (no_grad()) lm.Backbone.embed_tokens.weight![3, 5] = 42f;            // same storage: the head sees it
        // bitwise: tied weights share one storage: the same value read twice
        Assert.Equal(42f, lm.LmHead.weight![3, 5].item<float>());
        Assert.Equal(lm.Config.ParameterCount(), lm.UniqueParameters().Sum(p => p.Param.numel()));
    }

    [Fact]
    public void FewerLoopsGiveTheSameFirstSteps()
    {
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel();
        var ids = TestUtil.RandomIds(2, 9, 64, 3);
        var full = lm.Forward(ids);
        var two = lm.Forward(ids, new LoopForwardOptions { Loops = 2 });
        Assert.Equal(2, two.Steps);
        Assert.True(full.Hidden[1].allclose(two.Hidden[1], 0, 0));
    }

    /// <summary>
    /// Forward(ids, o) = ForwardFrom(FirstLoop(ids), o) bitwise (hooks and position offsets included); a repeated first-loop
    /// state runs independent copies, and its gradient is the sum of theirs.
    /// </summary>
    [Fact]
    public void ForwardFromTheFirstLoopEqualsForward()
    {
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel();
        var ids = TestUtil.RandomIds(2, 9, 64, 3);
        var options = new LoopForwardOptions { PositionOffset = 5, AfterLoop = (h, t) => h * (1 + 0.1 * t) };
        var full = lm.Forward(ids, options);
        var first = lm.FirstLoop(ids, positionOffset: 5);
        var split = lm.ForwardFrom(first, options);
        for (int t = 0; t < 4; t++) Assert.True(TestUtil.BitEqual(full.Hidden[t], split.Hidden[t]), $"loop {t}");
        Assert.True(TestUtil.BitEqual(full.GateLogits, split.GateLogits));
        Assert.Throws<ArgumentException>(() => lm.ForwardFrom(ids.to_type(ScalarType.Float32)));

        var shared = lm.FirstLoop(ids);
        var twice = lm.ForwardFrom(shared.repeat(2, 1, 1));
        var once = lm.ForwardFrom(shared);
        Assert.True((twice.Hidden[^1].narrow(0, 2, 2) - once.Hidden[^1]).abs().max().item<float>() < 1e-5);
        var g = lm.Backbone.layers[0].mlp.down_proj.weight!;
        once.Hidden[^1].sum().backward();
        var single = g.grad!.clone();
        g.grad!.zero_();
        lm.ForwardFrom(lm.FirstLoop(ids).repeat(2, 1, 1)).Hidden[^1].sum().backward();
        Assert.True((g.grad! - single * 2).abs().max().item<float>() < 1e-4 * single.abs().max().item<float>());
    }

    [Fact]
    public void CausalAttentionIgnoresFutureTokens()
    {
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel();
        var ids = TestUtil.RandomIds(1, 10, 64, 5);
        var changed = ids.clone();
        changed[0, 7] = (ids[0, 7] + 1) % 64;
        var a = lm.Forward(ids).Hidden[^1];
        var b = lm.Forward(changed).Hidden[^1];
        Assert.True(a.narrow(1, 0, 7).allclose(b.narrow(1, 0, 7), 1e-6, 1e-6), "positions before the change must not move");
        Assert.False(a.narrow(1, 7, 3).allclose(b.narrow(1, 7, 3), 1e-6, 1e-6), "positions at and after the change must move");
    }

    [Fact]
    public void LayerMatchesAnIndependentComputation()
    {
        // Recompute one Ouro layer by hand (explicit softmax attention with a triangular mask, GQA by repeating K/V)
        // and compare with the module; this checks the sandwich order, RoPE use, GQA and the causal mask together.
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel();
        var layer = lm.Backbone.layers[0];
        using var g = new Generator(9);
        // Distinct random norm weights: with the initial unit weights the four sandwich norms are interchangeable, and
        // a model that swapped two of them would pass.
        var norms = new[] { layer.input_layernorm, layer.input_layernorm_2, layer.post_attention_layernorm, layer.post_attention_layernorm_2 };
        using (no_grad())
            foreach (var n in norms) n.Weight.copy_(rand([32], generator: g) * 1.5 + 0.25);
        var h = randn([2, 6, 32], generator: g);
        var (cos, sin) = lm.Rope.Get(0, 6, CPU, ScalarType.Float32);
        var actual = layer.Forward(h, cos, sin);

        Tensor Rms(Tensor x, Tensor w) => w * (x * rsqrt(x.pow(2).mean([-1L], keepdim: true) + 1e-6));
        Tensor Rot(Tensor x) => cat([-x.narrow(-1, 4, 4), x.narrow(-1, 0, 4)], -1);
        var a = lm.Backbone.layers[0].self_attn;
        var m = layer.mlp;
        Tensor Layer(Tensor inputNorm, Tensor inputNorm2, Tensor postNorm, Tensor postNorm2)
        {
            var x = Rms(h, inputNorm);
            var q = matmul(x, a.q_proj.weight!.t()).view(2, 6, 4, 8).transpose(1, 2);
            var k = matmul(x, a.k_proj.weight!.t()).view(2, 6, 2, 8).transpose(1, 2);
            var v = matmul(x, a.v_proj.weight!.t()).view(2, 6, 2, 8).transpose(1, 2);
            q = q * cos + Rot(q) * sin;
            k = k * cos + Rot(k) * sin;
            k = k.repeat_interleave(2, 1);
            v = v.repeat_interleave(2, 1);
            var scores = matmul(q, k.transpose(-2, -1)) / Math.Sqrt(8);
            var mask = ones(6, 6).triu(1).to_type(ScalarType.Bool);
            scores = scores.masked_fill(mask, double.NegativeInfinity);
            var o = matmul(scores.softmax(-1), v).transpose(1, 2).reshape(2, 6, 32);
            var h1 = h + Rms(matmul(o, a.o_proj.weight!.t()), inputNorm2);
            var y = Rms(h1, postNorm);
            var mlp = matmul(nn.functional.silu(matmul(y, m.gate_proj.weight!.t())) * matmul(y, m.up_proj.weight!.t()), m.down_proj.weight!.t());
            return h1 + Rms(mlp, postNorm2);
        }
        var (w1, w2, w3, w4) = (norms[0].Weight, norms[1].Weight, norms[2].Weight, norms[3].Weight);
        Assert.True(actual.allclose(Layer(w1, w2, w3, w4), 1e-4, 1e-5));
        // The comparison can see a swap of any two sandwich norms.
        foreach (var swapped in new[] { Layer(w2, w1, w3, w4), Layer(w1, w2, w4, w3), Layer(w3, w2, w1, w4), Layer(w1, w4, w3, w2) })
            Assert.False(actual.allclose(swapped, 1e-4, 1e-5), "a swapped norm must change the layer's output");
    }

    [Fact]
    public void FinalNormIsAppliedAfterEveryLoopAndFeedsTheNext()
    {
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel(loops: 3);
        var ids = TestUtil.RandomIds(1, 5, 64, 8);
        var o = lm.Forward(ids);
        var (cos, sin) = lm.Rope.Get(0, 5, CPU, ScalarType.Float32);
        var h = lm.Backbone.embed_tokens.forward(ids);
        for (int t = 0; t < 3; t++)
        {
            foreach (var layer in lm.Backbone.layers) h = layer.Forward(h, cos, sin);
            h = lm.Backbone.norm.forward(h);
            Assert.True(o.Hidden[t].allclose(h, 0, 0));
        }
        // The gate reads the normed state: gate logits equal the linear gate on Hidden[t].
        var gate = lm.Backbone.early_exit_gate.forward(o.Hidden[1]).squeeze(-1);
        Assert.True(o.GateLogits.select(-1, 1).allclose(gate, 0, 0));
    }

    [Fact]
    public void BFloat16ModelRunsAndTracksFloat32()
    {
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel();
        var c = lm.Config;
        using var bf = new OuroForCausalLM(c, dtype: ScalarType.BFloat16);
        using (no_grad())
            foreach (var ((_, p32), (_, p16)) in lm.UniqueParameters().Zip(bf.UniqueParameters())) p16.copy_(p32);
        var ids = TestUtil.RandomIds(1, 6, 64, 2);
        var a = lm.GoldLogProbsPerStep(lm.Forward(ids), ids);
        var b = bf.GoldLogProbsPerStep(bf.Forward(ids), ids);
        Assert.Equal(ScalarType.BFloat16, bf.DType);
        Assert.Equal(ScalarType.Float32, b.dtype);
        Assert.True(a.allclose(b, 0.05, 0.1), "bf16 log-probs should be close to f32");
    }
}
