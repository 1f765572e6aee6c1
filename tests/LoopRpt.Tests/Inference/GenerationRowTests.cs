using LoopRpt.Inference;
using LoopRpt.Model;

namespace LoopRpt.Tests.Inference;

/// <summary>Per-row sampling, log-probabilities at the exit loop, and rows that join a running batch (LoopedGenerator.Serve).</summary>
public class GenerationRowTests
{
    private static readonly long[] Prompt = InferenceTestUtil.Prompt;

    /// <summary>Teacher-forced scoring of prompt + generated tokens: the independent computation of each token's log-probability and exit.</summary>
    private static ScoredDocument Scored(OuroForCausalLM lm, IReadOnlyList<long> prompt, IReadOnlyList<long> tokens, double q)
        => new DocumentScorer(lm, new DocumentScorerOptions { Exit = ExitMode.Q(q) }).Score(prompt.Concat(tokens).Select(t => (int)t).ToArray());

    [Fact]
    public void LogProbsAreTheModelsAtTheExitLoopBeforeTemperatureAndTopP()
    {
        using var lm = InferenceTestUtil.SpreadGateModel();
        var result = new LoopedGenerator(lm).Generate(Prompt, new GenerationOptions
        {
            MaxNewTokens = 10, Temperature = 1.7, TopP = 0.8, Seed = 3, Exit = ExitMode.Q(0.6), TopLogprobs = 4,
        });
        var details = result.Details!;
        Assert.Equal(result.Tokens, details.Select(d => d.Id));
        var scored = Scored(lm, Prompt, result.Tokens, 0.6);
        Assert.Contains(details, d => d.Loops < lm.Config.TotalUtSteps);                   // adaptive exit did happen
        for (int j = 0; j < details.Count; j++)
        {
            int at = Prompt.Length - 1 + j;                                                  // position predicting token j
            Tolerance.AssertClose(scored.TokenLogProbabilities[at], details[j].LogProb, $"token {j}", relative: 1e-4, absolute: 1e-4);
            Assert.Equal((int)scored.ExitSteps[at], details[j].Loops);
            var top = details[j].Top;
            Assert.Equal(4, top.Count);
            for (int a = 1; a < top.Count; a++) Assert.True(top[a - 1].LogProb >= top[a].LogProb, "top_logprobs sorted, most likely first");
            Assert.True(top.Sum(t => Math.Exp(t.LogProb)) <= 1 + 1e-5);
            if (details[j].LogProb >= top[^1].LogProb + 1e-6) Assert.Contains(details[j].Id, top.Select(t => t.Token));
        }
    }

    [Fact]
    public void GreedyTokensAreTheTopAlternative()
    {
        using var lm = InferenceTestUtil.SpreadGateModel();
        var result = new LoopedGenerator(lm).Generate(Prompt, new GenerationOptions { MaxNewTokens = 6, Temperature = 0, TopLogprobs = 2 });
        foreach (var d in result.Details!)
        {
            Assert.Equal(d.Id, d.Top[0].Token);
            Assert.Equal(d.LogProb, d.Top[0].LogProb);                                       // bitwise: both read from one log-softmax tensor
        }
        Assert.Null(new LoopedGenerator(lm).Generate(Prompt, new GenerationOptions { MaxNewTokens = 2, Temperature = 0 }).Details);
    }

    [Fact]
    public void EachPromptOfASampledBatchGetsTheTokensItGetsAloneWithItsSeed()
    {
        using var lm = InferenceTestUtil.SpreadGateModel();
        IReadOnlyList<long>[] prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10], [11, 12, 13]];
        var options = new GenerationOptions { MaxNewTokens = 9, Temperature = 1.1, TopP = 0.95, Seed = 20, BatchSize = 3, Exit = ExitMode.Q(0.7) };
        var generator = new LoopedGenerator(lm);
        var batch = generator.GenerateBatch(prompts, options);
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = generator.Generate(prompts[i], new GenerationOptions
            {
                MaxNewTokens = 9, Temperature = 1.1, TopP = 0.95, Seed = 20 + (ulong)i, Exit = ExitMode.Q(0.7),
            });
            Assert.Equal(alone.Tokens, batch[i].Tokens);
            Assert.Equal(alone.LoopsUsed, batch[i].LoopsUsed);
        }
        Assert.NotEqual(batch[0].Tokens, batch[4].Tokens);                                  // the rows did sample differently
    }

    [Fact]
    public void ARowThatArrivesWhileServeDecodesJoinsBeforeTheBatchEndsAndKeepsItsOwnSettings()
    {
        using var lm = InferenceTestUtil.SpreadGateModel();
        var events = new List<string>();
        var longTokens = new List<long>();
        var lateTokens = new List<long>();
        bool released = false;
        var rows = new Queue<GenerationRow>();
        rows.Enqueue(new GenerationRow
        {
            Prompt = Prompt, MaxNewTokens = 40, Temperature = 0,
            OnToken = t =>
            {
                longTokens.Add(t.Id);
                events.Add("long");
                if (longTokens.Count == 5)
                {
                    released = true;                                                         // the late row becomes available now
                    rows.Enqueue(new GenerationRow
                    {
                        Prompt = [3, 1, 4], MaxNewTokens = 6, Temperature = 0.9, TopP = 0.9, Seed = 77, Exit = ExitMode.Q(0.5),
                        OnToken = late =>
                        {
                            lateTokens.Add(late.Id);
                            events.Add("late");
                            return false;
                        },
                    });
                }
                return false;
            },
        });
        new LoopedGenerator(lm).Serve(() => rows.Count > 0 ? rows.Dequeue() : null, batchSize: 4);
        Assert.True(released);
        Assert.Equal(40, longTokens.Count);
        Assert.Equal(6, lateTokens.Count);
        Assert.True(events.IndexOf("late") < events.LastIndexOf("long") - 10, "the late row decoded beside the long one");
        var alone = new LoopedGenerator(lm);
        Assert.Equal(alone.Generate(Prompt, new GenerationOptions { MaxNewTokens = 40, Temperature = 0 }).Tokens, longTokens);
        Assert.Equal(alone.Generate([3, 1, 4], new GenerationOptions { MaxNewTokens = 6, Temperature = 0.9, TopP = 0.9, Seed = 77, Exit = ExitMode.Q(0.5) }).Tokens, lateTokens);
    }

    [Fact]
    public void AsManyRowsAsTheBatchArrivingAtOnceWhileARowDecodesLeaveItsCacheAlone()
    {
        // Batch 2: the long row starts alone (its prefill on a scratch cache); two rows then arrive together, as many as
        // the batch has rows. Their prefill must not go into the batch's cache, where the long row's keys/values live
        // (only a run's first prefill may), so every row still gets the tokens it gets alone.
        using var lm = InferenceTestUtil.SpreadGateModel();
        long[][] late = [[3, 1, 4], [2, 7]];
        var lateTokens = new[] { new List<long>(), new List<long>() };
        var longTokens = new List<long>();
        var rows = new Queue<GenerationRow>();
        rows.Enqueue(new GenerationRow
        {
            Prompt = Prompt, MaxNewTokens = 30, Temperature = 0,
            OnToken = t =>
            {
                longTokens.Add(t.Id);
                if (longTokens.Count == 4)
                    for (int i = 0; i < late.Length; i++)
                    {
                        var sink = lateTokens[i];
                        rows.Enqueue(new GenerationRow { Prompt = late[i], MaxNewTokens = 8, Temperature = 0, OnToken = x => { sink.Add(x.Id); return false; } });
                    }
                return false;
            },
        });
        new LoopedGenerator(lm).Serve(() => rows.Count > 0 ? rows.Dequeue() : null, batchSize: 2);
        var alone = new LoopedGenerator(lm);
        Assert.Equal(alone.Generate(Prompt, new GenerationOptions { MaxNewTokens = 30, Temperature = 0 }).Tokens, longTokens);
        for (int i = 0; i < late.Length; i++)
            Assert.Equal(alone.Generate(late[i], new GenerationOptions { MaxNewTokens = 8, Temperature = 0 }).Tokens, lateTokens[i]);
    }

    [Fact]
    public void ServeRefusesAnInvalidRow()
    {
        using var lm = InferenceTestUtil.SpreadGateModel();
        var row = new GenerationRow { Prompt = Prompt, TopLogprobs = 21, OnToken = _ => false };
        var feed = new Queue<GenerationRow>([row]);
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoopedGenerator(lm).Serve(() => feed.Count > 0 ? feed.Dequeue() : null, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoopedGenerator(lm).Generate(Prompt, new GenerationOptions { TopLogprobs = -1 }));
    }
}
