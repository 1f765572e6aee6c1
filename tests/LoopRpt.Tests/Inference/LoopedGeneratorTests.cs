using LoopRpt.Inference;
using LoopRpt.Model;
using static LoopRpt.Tests.Inference.InferenceTestUtil;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Inference;

public class LoopedGeneratorTests
{
    [Fact]
    public void CachedGreedyAtFullDepthEqualsUncachedRecomputation()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var result = new LoopedGenerator(lm).Generate(Prompt,
            new GenerationOptions { MaxNewTokens = 12, Temperature = 0, Exit = ExitMode.Q(1.0) });

        // Independent reference: the whole sequence through the full-depth forward at every step, no cache.
        var sequence = Prompt.ToList();
        using (no_grad())
            for (int i = 0; i < 12; i++)
            {
                var hidden = lm.Forward(tensor(sequence.ToArray(), [1, sequence.Count])).Hidden[^1];
                sequence.Add(lm.Logits(hidden)[0, -1].argmax().item<long>());
            }
        Assert.Equal(sequence.Skip(Prompt.Length).ToArray(), result.Tokens);
        Assert.All(result.LoopsUsed, l => Assert.Equal(4, l));
        Assert.Equal(FinishReason.Length, result.FinishReason);
    }

    [Fact]
    public void AdaptiveGenerationReproducesAdaptiveScoring()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var mode = ExitMode.Q(0.6);
        var result = new LoopedGenerator(lm).Generate(Prompt, new GenerationOptions { MaxNewTokens = 16, Temperature = 0, Exit = mode });
        Assert.Contains(result.LoopsUsed, l => l < 4);                    // some tokens really exit early

        // Teacher-forced scoring of prompt + continuation applies the same frozen-KV rule to the same tokens.
        var full = Prompt.Concat(result.Tokens).ToArray();
        using var score = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = mode }).Score(tensor(full, [1, full.Length]));
        var predicted = Longs(score.Predictions[0]).Skip(Prompt.Length - 1).Take(result.Tokens.Length).ToArray();
        var exits = Longs(score.ExitSteps[0]).Skip(Prompt.Length - 1).Take(result.Tokens.Length).Select(e => (int)e + 1).ToArray();
        Assert.Equal(predicted, result.Tokens);
        Assert.Equal(exits, result.LoopsUsed);
    }

    [Fact]
    public void ExitedTokenSlotsHoldTheExitLoopKeysAndValues()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        using var noGrad = no_grad();
        var cfg = lm.Config;
        using var cache = new LoopKvCache(1, 24, 4, cfg.NumHiddenLayers, cfg.NumKeyValueHeads, cfg.HeadDim, rolling: false, CPU, ScalarType.Float32);
        var runner = new AdaptiveLoopRunner(lm);
        var rule = ExitRule.From(ExitMode.Q(0.6), cfg, "mode");
        var first = runner.Run(TestUtil.RandomIds(1, 10, 64, 4), null, cache, rule);   // prefill
        var second = runner.Run(TestUtil.RandomIds(1, 1, 64, 5), null, cache, rule);   // one decode step
        var exits = Longs(first.ExitSteps).Concat(Longs(second.ExitSteps)).ToArray();
        Assert.Contains(exits, e => e < 3);
        for (int pos = 0; pos < exits.Length; pos++)
            for (int l = 0; l < cfg.NumHiddenLayers; l++)
            {
                int e = (int)exits[pos];
                for (int t = e + 1; t < 4; t++)
                {
                    Assert.True(Same(cache.Keys(t, l, 11)[.., .., pos], cache.Keys(e, l, 11)[.., .., pos]));
                    Assert.True(Same(cache.Values(t, l, 11)[.., .., pos], cache.Values(e, l, 11)[.., .., pos]));
                }
                if (e > 0) Assert.False(Same(cache.Keys(e, l, 11)[.., .., pos], cache.Keys(e - 1, l, 11)[.., .., pos]));
            }
    }

    [Theory]
    [InlineData(0.6)]
    [InlineData(1.0)]
    public void BatchedGenerationOfUnequalPromptsEqualsOneAtATime(double q)
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var generator = new LoopedGenerator(lm);
        var options = new GenerationOptions { MaxNewTokens = 10, Temperature = 0, Exit = ExitMode.Q(q) };
        long[][] prompts = [Prompt, [9, 1, 60], [50, 50, 4, 7, 11, 30, 2], [12]];
        var batch = generator.GenerateBatch(prompts, options);
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = generator.Generate(prompts[i], options);
            Assert.Equal(alone.Tokens, batch[i].Tokens);
            Assert.Equal(alone.LoopsUsed, batch[i].LoopsUsed);
        }
        if (q < 1)   // the rows really ran out of step: some token index exits at different loops in different rows
            Assert.Contains(Enumerable.Range(0, 10), k => batch.Select(r => r.LoopsUsed[k]).Distinct().Count() > 1);
    }

    [Fact]
    public void RowsThatStopEarlyLeaveTheOthersUnchanged()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var generator = new LoopedGenerator(lm);
        long[][] prompts = [Prompt, [9, 1, 60], [50, 50, 4, 7, 11, 30, 2]];
        var free = generator.GenerateBatch(prompts, new GenerationOptions { MaxNewTokens = 12, Temperature = 0, Exit = ExitMode.Q(0.6) });
        // A stop token that ends row 0 early (its first occurrence there), whatever it does to the other rows.
        int at = Enumerable.Range(1, 11).First(i => !free[0].Tokens.Take(i).Contains(free[0].Tokens[i]));
        var options = new GenerationOptions { MaxNewTokens = 12, Temperature = 0, Exit = ExitMode.Q(0.6), StopTokens = [free[0].Tokens[at]] };
        var batch = generator.GenerateBatch(prompts, options);
        Assert.Equal(at + 1, batch[0].Tokens.Length);
        Assert.Equal(FinishReason.Stop, batch[0].FinishReason);
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = generator.Generate(prompts[i], options);
            Assert.Equal(alone.Tokens, batch[i].Tokens);
            Assert.Equal(alone.LoopsUsed, batch[i].LoopsUsed);
            Assert.Equal(alone.FinishReason, batch[i].FinishReason);
        }
    }

    [Theory]
    [InlineData(1, 10)]
    [InlineData(2, 10)]
    [InlineData(3, 1)]
    public void QueuedPromptsTakeFreedRowsAndMatchOneAtATime(int batchSize, int maxNewTokens)
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var generator = new LoopedGenerator(lm);
        long[][] prompts = [Prompt, [9, 1, 60], [50, 50, 4, 7, 11, 30, 2], [12], [33, 34, 35, 36]];
        var alone = prompts.Select(p => generator.Generate(p, new GenerationOptions { MaxNewTokens = maxNewTokens, Temperature = 0, Exit = ExitMode.Q(0.6) })).ToArray();
        // Row 0 stops early on its third token, so its row is handed over while the others still run.
        long[] stops = maxNewTokens > 2 ? [alone[0].Tokens[2]] : [];
        GenerationOptions Options(int rows) => new() { MaxNewTokens = maxNewTokens, Temperature = 0, Exit = ExitMode.Q(0.6), BatchSize = rows, StopTokens = stops };
        var batch = generator.GenerateBatch(prompts, Options(batchSize));
        Assert.Equal(prompts.Length, batch.Count);
        for (int i = 0; i < prompts.Length; i++)
        {
            var expected = generator.Generate(prompts[i], Options(1));
            Assert.Equal(expected.Tokens, batch[i].Tokens);
            Assert.Equal(expected.LoopsUsed, batch[i].LoopsUsed);
            Assert.Equal(expected.FinishReason, batch[i].FinishReason);
            Assert.True(batch[i].Tokens.Length <= maxNewTokens);
        }
        if (stops.Length > 0) Assert.True(batch[0].Tokens.Length <= 3);
    }

    [Fact]
    public void LastLoopCacheMatchesAnIndependentDecoder()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        const int count = 12;
        var options = new GenerationOptions { MaxNewTokens = count, Temperature = 0, Exit = ExitMode.Q(0.6), KvCache = KvCacheMode.LastLoop };
        // A one-token prompt whose continuation has tokens that ran several loops: a later token's loop 0 then reads
        // their exit-loop keys/values, not loop 0's, so the shared cache really differs from per-loop slots.
        var (prompt, result) = new long[] { 17, 3, 42, 8, 25, 9, 50, 60 }
            .Select(first => (Prompt: new[] { first }, Result: new LoopedGenerator(lm).Generate([first], options)))
            .First(c => c.Result.LoopsUsed.Take(count - 1).Count(l => l > 1) >= 2);

        // Reference: one token at a time, loop by loop, with the model's modules; every earlier position keeps only the
        // keys/values of its exit loop, per layer.
        using var noGrad = no_grad();
        var cfg = lm.Config;
        var backbone = lm.Backbone;
        var keys = Enumerable.Range(0, cfg.NumHiddenLayers).Select(_ => new List<Tensor>()).ToArray();
        var values = Enumerable.Range(0, cfg.NumHiddenLayers).Select(_ => new List<Tensor>()).ToArray();
        var tokens = new List<long>();
        var loops = new List<int>();
        long token = prompt[0];
        for (int pos = 0; tokens.Count < count; pos++)
        {
            var x = backbone.embed_tokens.forward(tensor(new[] { token }, [1]));
            var (cos, sin) = lm.Rope.Get(pos, 1, CPU, ScalarType.Float32);
            var logSurvival = zeros(1);
            var cdf = zeros(1);
            var ownK = new Tensor[cfg.NumHiddenLayers];
            var ownV = new Tensor[cfg.NumHiddenLayers];
            for (int t = 0; ; t++)
            {
                for (int l = 0; l < cfg.NumHiddenLayers; l++)
                {
                    var layer = backbone.layers[l];
                    var attn = layer.self_attn;
                    var normed = layer.input_layernorm.forward(x);
                    var q = Rope.Apply(attn.q_proj.forward(normed).view(1, attn.NumHeads, attn.HeadDim), cos, sin);
                    ownK[l] = Rope.Apply(attn.k_proj.forward(normed).view(1, attn.NumKvHeads, attn.HeadDim), cos, sin);
                    ownV[l] = attn.v_proj.forward(normed).view(1, attn.NumKvHeads, attn.HeadDim);
                    var k = cat([.. keys[l], ownK[l]], 0).unsqueeze(0).transpose(1, 2);          // (1, kv, pos + 1, D)
                    var v = cat([.. values[l], ownV[l]], 0).unsqueeze(0).transpose(1, 2);
                    var o = attn.Attend(q.unsqueeze(2), k, v, causal: false, mask: null);
                    x = x + layer.input_layernorm_2.forward(attn.o_proj.forward(o.view(1, attn.NumHeads * attn.HeadDim)));
                    x = layer.Mlp(x);
                }
                x = backbone.norm.forward(x);
                var g = backbone.early_exit_gate.forward(x).squeeze(-1);
                cdf = cdf + (nn.functional.logsigmoid(g) + logSurvival).exp();
                logSurvival = logSurvival + nn.functional.logsigmoid(-g);
                if (t < cfg.TotalUtSteps - 1 && cdf.item<float>() < 0.6f) continue;
                for (int l = 0; l < cfg.NumHiddenLayers; l++)
                {
                    keys[l].Add(ownK[l]);
                    values[l].Add(ownV[l]);
                }
                token = lm.Logits(x)[0].argmax().item<long>();
                tokens.Add(token);
                loops.Add(t + 1);
                break;
            }
        }
        Assert.Equal(tokens, result.Tokens);
        Assert.Equal(loops, result.LoopsUsed);

        // The same prompts through a batch (staggered rows, queued prompts) give each prompt its result alone.
        long[][] prompts = [prompt, [9, 1, 60], [50, 50, 4, 7, 11, 30, 2]];
        GenerationOptions Options(int rows) => new() { MaxNewTokens = 10, Temperature = 0, Exit = ExitMode.Q(0.6), KvCache = KvCacheMode.LastLoop, BatchSize = rows };
        var batch = new LoopedGenerator(lm).GenerateBatch(prompts, Options(2));
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = new LoopedGenerator(lm).Generate(prompts[i], Options(1));
            Assert.Equal(alone.Tokens, batch[i].Tokens);
            Assert.Equal(alone.LoopsUsed, batch[i].LoopsUsed);
        }
    }

    [Fact]
    public void CancellationStopsGenerationAndReleasesItsTensors()
    {
        using var lm = SpreadGateModel();
        var generator = new LoopedGenerator(lm);
        long[][] prompts = [Prompt, [9, 1, 60], [12]];
        var options = new GenerationOptions { MaxNewTokens = 200, Temperature = 0, Exit = ExitMode.Q(0.6), BatchSize = 2 };
        generator.GenerateBatch(prompts, new GenerationOptions { MaxNewTokens = 2 });          // builds the RoPE table once
        long before = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => generator.GenerateBatch(prompts, options, cancelled.Token));
        // Cancelled mid-run, from the streaming callback, after the tenth token.
        using var midway = new CancellationTokenSource();
        var streamed = new List<(int, long, int)>();
        var unfinished = new LoopedGenerator(lm) { InspectCache = _ => Assert.Fail("a cancelled run must not finish") };
        var stopAfterTen = new GenerationOptions
        {
            MaxNewTokens = 200, Temperature = 0, Exit = ExitMode.Q(0.6), BatchSize = 2,
            OnToken = (i, t, l) => { streamed.Add((i, t, l)); if (streamed.Count == 10) midway.Cancel(); },
        };
        Assert.ThrowsAny<OperationCanceledException>(() => unfinished.GenerateBatch(prompts, stopAfterTen, midway.Token));
        Assert.InRange(streamed.Count, 10, 12);                                               // the tick in flight finishes
        Assert.Equal(before, TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void StreamedTokensAreTheResultInGenerationOrder()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        long[][] prompts = [Prompt, [9, 1, 60], [12]];
        var streamed = new List<(int Prompt, long Token, int Loops)>();
        var result = new LoopedGenerator(lm).GenerateBatch(prompts, new GenerationOptions
        {
            MaxNewTokens = 8, Temperature = 0, Exit = ExitMode.Q(0.6), BatchSize = 2, OnToken = (i, t, l) => streamed.Add((i, t, l)),
        });
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(result[i].Tokens, streamed.Where(s => s.Prompt == i).Select(s => s.Token));
            Assert.Equal(result[i].LoopsUsed, streamed.Where(s => s.Prompt == i).Select(s => s.Loops));
        }
        // Two rows: prompt 2 starts only once prompt 0 or 1 has finished.
        Assert.True(streamed.FindIndex(s => s.Prompt == 2) > Math.Min(streamed.FindLastIndex(s => s.Prompt == 0), streamed.FindLastIndex(s => s.Prompt == 1)));
    }

    [Fact]
    public void StaggeredDecodingFillsSkippedLoopsWithTheExitLoopKeysAndValues()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var mode = ExitMode.Q(0.6);
        long[][] prompts = [Prompt, [9, 1, 60]];
        LoopKvCache? cache = null;
        Tensor? keys = null, values = null;
        var generator = new LoopedGenerator(lm) { InspectCache = c => { cache = c; keys = c.AllKeys.clone().DetachFromDisposeScope(); values = c.AllValues.clone().DetachFromDisposeScope(); } };
        var rows = generator.GenerateBatch(prompts, new GenerationOptions { MaxNewTokens = 12, Temperature = 0, Exit = mode });
        Assert.NotNull(cache);
        int layers = lm.Config.NumHiddenLayers, checkedDecoded = 0;
        for (int b = 0; b < prompts.Length; b++)
        {
            // Exit step of every computed position, from teacher-forced adaptive scoring of the row alone (an independent pass).
            var text = prompts[b].Concat(rows[b].Tokens).ToArray();
            using var score = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = mode }).Score(tensor(text, [1, text.Length]));
            var exits = Longs(score.ExitSteps[0]).Take(text.Length - 1).ToArray();
            for (int pos = 0; pos < exits.Length; pos++)
                for (int l = 0; l < layers; l++)
                {
                    int e = (int)exits[pos];
                    if (pos >= prompts[b].Length && e < 3) checkedDecoded++;
                    for (int t = e + 1; t < 4; t++)
                    {
                        Assert.True(Same(keys![cache!.FlatRow(l, t, b, pos)], keys[cache.FlatRow(l, e, b, pos)]), $"keys row {b} pos {pos} loop {t}");
                        Assert.True(Same(values![cache.FlatRow(l, t, b, pos)], values[cache.FlatRow(l, e, b, pos)]));
                    }
                    if (e > 0) Assert.False(Same(keys![cache!.FlatRow(l, e, b, pos)], keys[cache.FlatRow(l, e - 1, b, pos)]));
                }
        }
        Assert.True(checkedDecoded > 0, "some decoded token must exit before the last loop");
        keys!.Dispose();
        values!.Dispose();
    }

    [Fact]
    public void TinyTopPIsGreedy()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var generator = new LoopedGenerator(lm);
        var greedy = generator.Generate(Prompt, new GenerationOptions { MaxNewTokens = 10, Temperature = 0 });
        var nucleus = generator.Generate(Prompt, new GenerationOptions { MaxNewTokens = 10, Temperature = 1.0, TopP = 1e-6, Seed = 3 });
        Assert.Equal(greedy.Tokens, nucleus.Tokens);
    }

    [Fact]
    public void StopTokenEndsTheSequence()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var generator = new LoopedGenerator(lm);
        var free = generator.Generate(Prompt, new GenerationOptions { MaxNewTokens = 12, Temperature = 0 });
        int at = Enumerable.Range(1, 11).First(i => !free.Tokens.Take(i).Contains(free.Tokens[i]));
        var stopped = generator.Generate(Prompt, new GenerationOptions { MaxNewTokens = 12, Temperature = 0, StopTokens = [free.Tokens[at]] });
        Assert.Equal(free.Tokens.Take(at + 1).ToArray(), stopped.Tokens);
        Assert.Equal(FinishReason.Stop, stopped.FinishReason);
        Assert.Equal(at + 1, stopped.LoopsUsed.Length);
    }

    [Fact]
    public void CatalogEntryPointsMatchTheComponents()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        var direct = new LoopedGenerator(lm).Generate(Prompt, new GenerationOptions { MaxNewTokens = 8, Temperature = 0, Exit = ExitMode.Q(0.6) });
        var simple = lm.Generate(Prompt, maxNewTokens: 8, q: 0.6, temperature: 0);
        Assert.Equal(direct.Tokens, simple.Tokens);
        Assert.Equal(direct.LoopsUsed, simple.LoopsUsed);

        var ids = tensor(Prompt, [1, Prompt.Length]);
        using var a = lm.AdaptiveScorer(0.6).Score(ids);
        using var b = new AdaptiveExitScorer(lm, new AdaptiveExitScorerOptions { Exit = ExitMode.Q(0.6) }).Score(ids);
        Assert.True(Same(a.GoldLogProbs, b.GoldLogProbs));
        Assert.Equal("q", Assert.Throws<ArgumentOutOfRangeException>(() => lm.AdaptiveScorer(1.5)).ParamName);
    }

    [Fact]
    public void BadInputsFailNamingTheParameter()
    {
        using var lm = TestUtil.TinyModel();
        var generator = new LoopedGenerator(lm);
        Assert.Equal("options", Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate(Prompt, new GenerationOptions { MaxNewTokens = 0 })).ParamName);
        Assert.Equal("options", Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate(Prompt, new GenerationOptions { TopP = 0 })).ParamName);
        Assert.Equal("options", Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate(Prompt, new GenerationOptions { BatchSize = 0 })).ParamName);
        Assert.Equal("options", Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate(Prompt, new GenerationOptions { Temperature = -1 })).ParamName);
        Assert.Equal("options", Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate(Prompt, new GenerationOptions { Exit = ExitMode.Expected })).ParamName);
        Assert.Equal("prompts", Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate([1, 64])).ParamName);
        Assert.Equal("prompts", Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate(Prompt, new GenerationOptions { MaxNewTokens = 252 })).ParamName);
        Assert.Throws<ArgumentException>(() => generator.Generate(Array.Empty<long>()));
        Assert.Equal("prompts", Assert.Throws<ArgumentException>(() => generator.GenerateBatch([Prompt, []])).ParamName);
        Assert.Equal("prompts", Assert.Throws<ArgumentOutOfRangeException>(() => generator.GenerateBatch([[1, 2], Prompt], new GenerationOptions { MaxNewTokens = 252 })).ParamName);
    }
}
