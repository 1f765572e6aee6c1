using System.Diagnostics.Metrics;
using LoopRpt.Inference;
using LoopRpt.Model;
using static LoopRpt.Tests.Inference.InferenceTestUtil;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Inference;

/// <summary>The inference meter is process-wide: these tests run alone (<see cref="ProcessWideCollection"/>).</summary>
[Collection("ProcessWide")]
public class InferenceMetricsTests
{
    /// <summary>Sums of the meter's counters over one action.</summary>
    private static Dictionary<string, long> Count(Action action)
    {
        var sums = new Dictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == InferenceMetrics.MeterName) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
        {
            lock (sums) sums[instrument.Name] = sums.GetValueOrDefault(instrument.Name) + value;
        });
        listener.Start();
        action();
        return sums;
    }

    [Fact]
    public void FullDepthDecodingRunsOneTickPerLoopOfEachToken()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        int loops = lm.Config.TotalUtSteps;
        IReadOnlyList<long>[] prompts = [Prompt, [9, 4, 30, 2, 11]];
        var sums = Count(() => new LoopedGenerator(lm).GenerateBatch(prompts,
            new GenerationOptions { MaxNewTokens = 5, Exit = ExitMode.Last, BatchSize = 2 }));

        // The first token of each sequence comes from the prefill; the other 4 each take T ticks, both rows in lockstep.
        Assert.Equal(4L * loops, sums["looprpt.decode.ticks"]);
        Assert.Equal(2L * 4 * loops, sums["looprpt.decode.row_loops"]);
        Assert.Equal(2L * 4, sums["looprpt.decode.tokens"]);
    }

    [Fact]
    public void AdaptiveDecodingCountsTheLoopsOfDecodedTokens()
    {
        using var scope = NewDisposeScope();
        using var lm = SpreadGateModel();
        IReadOnlyList<long>[] prompts = [Prompt, [9, 4, 30], [7, 7, 1, 2, 3, 4, 5], [12, 40]];
        IReadOnlyList<GeneratedSequence> results = [];
        var sums = Count(() => results = new LoopedGenerator(lm).GenerateBatch(prompts,
            new GenerationOptions { MaxNewTokens = 9, Exit = ExitMode.Q(0.6), BatchSize = 3 }));

        // Independent expectation from the results: every token after the first was decoded, with the loops it reports.
        long decoded = results.Sum(r => r.Tokens.Length - 1);
        long rowLoops = results.Sum(r => r.LoopsUsed.Skip(1).Sum(l => (long)l));
        Assert.Equal(decoded, sums["looprpt.decode.tokens"]);
        Assert.Equal(rowLoops, sums["looprpt.decode.row_loops"]);
        Assert.True(results.SelectMany(r => r.LoopsUsed).Distinct().Count() > 1, "exits must spread over loops for this test to mean something");
        // Three rows at most per tick, at least one.
        long ticks = sums["looprpt.decode.ticks"];
        Assert.InRange(ticks, (rowLoops + 2) / 3, rowLoops);
    }
}
