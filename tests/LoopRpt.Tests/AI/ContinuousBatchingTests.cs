using LoopRpt.AI;
using LoopRpt.Inference;

namespace LoopRpt.Tests.AI;

/// <summary>The generation scheduler: requests join a running batch, and sampled requests batch without changing their replies.</summary>
public class ContinuousBatchingTests
{
    /// <summary>A request with no end token (so it runs to its budget), streaming its text to <paramref name="onText"/>.</summary>
    private static GenerationRequest Request(string text, int maxTokens, double temperature, ulong seed, Action<LoopRptDelta>? onText = null,
        double? exit = null, double topP = 1)
        => new(codec => new RenderedPrompt(codec.Ids(text), [], []),
            new GenerationSettings(maxTokens, null, temperature, topP, seed, exit, GenerationOptions.Defaults.KvCache), onText, CancellationToken.None);

    /// <summary>
    /// Runs an 80-token request, enqueues a 5-token one once the first has streamed a token, and returns both replies
    /// and the order in which their tokens were generated (the deltas are handed out on the worker thread as tokens are sampled).
    /// </summary>
    private static async Task<(LoopRptGeneration Long, LoopRptGeneration Late, List<string> Log)> LongThenLate(GenerationScheduler scheduler)
    {
        var log = new List<string>();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var longReply = scheduler.Enqueue(Request("hello", 80, 0, 0, _ =>
        {
            lock (log) log.Add("long");
            started.TrySetResult();
        }));
        await started.Task;
        var late = await scheduler.Enqueue(Request("abc", 5, 0.8, 9, _ => { lock (log) log.Add("late"); }));
        return (await longReply, late, log);
    }

    [Fact]
    public async Task ARequestEnqueuedWhileALongBatchRunsGetsItsFirstTokenBeforeThatBatchEnds()
    {
        using var model = AiTestSupport.Model();
        using var scheduler = new GenerationScheduler(model, 4);
        var (first, late, log) = await LongThenLate(scheduler);

        Assert.Equal(80, first.Tokens.Length);
        Assert.Equal(5, late.Tokens.Length);
        lock (log)
        {
            int firstLate = log.IndexOf("late"), lastLong = log.LastIndexOf("long");
            Assert.True(firstLate >= 0 && firstLate < lastLong, $"the late request's first token ({firstLate}) comes before the long batch's last ({lastLong})");
            Assert.True(log.Take(firstLate).Count(e => e == "long") < 80 - 5, "it joined mid-batch, not at the end");
        }

        // Joining changes neither reply: each is the one its request gets alone.
        using var alone = new GenerationScheduler(model, 4);
        Assert.Equal((await alone.Enqueue(Request("hello", 80, 0, 0))).Tokens, first.Tokens);
        Assert.Equal((await alone.Enqueue(Request("abc", 5, 0.8, 9))).Tokens, late.Tokens);

        // The scheduling before continuous batching (kept selectable): the late request waits for the batch to end.
        using var waiting = new GenerationScheduler(model, 4, joinRunningBatch: false);
        var before = await LongThenLate(waiting);
        Assert.True(before.Log.IndexOf("late") > before.Log.LastIndexOf("long"));
        Assert.Equal(late.Tokens, before.Late.Tokens);
    }

    [Fact]
    public async Task ARequestTooLongForTheRunningBatchsCacheWaitsForTheNextBatchAndGetsItsReply()
    {
        using var model = AiTestSupport.Model();
        using var scheduler = new GenerationScheduler(model, 4);
        var log = new List<string>();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        // "hello" + 40 tokens sizes the batch's cache at 64 positions; the late request needs "abc" + 100.
        var first = scheduler.Enqueue(Request("hello", 40, 0, 0, _ =>
        {
            lock (log) log.Add("first");
            started.TrySetResult();
        }));
        await started.Task;
        var late = await scheduler.Enqueue(Request("abc", 100, 0.7, 4, _ => { lock (log) log.Add("late"); }));
        Assert.Equal(40, (await first).Tokens.Length);
        lock (log) Assert.True(log.IndexOf("late") > log.LastIndexOf("first"), "it waited for the batch it did not fit");
        using var alone = new GenerationScheduler(model, 4);
        Assert.Equal((await alone.Enqueue(Request("abc", 100, 0.7, 4))).Tokens, late.Tokens);
    }

    [Fact]
    public async Task ARequestThatMustWaitStopsLaterArrivalsFromJoiningSoTheBatchDrains()
    {
        using var model = AiTestSupport.Model();
        using var scheduler = new GenerationScheduler(model, 4);
        var log = new List<string>();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = scheduler.Enqueue(Request("hello", 40, 0, 0, _ =>
        {
            lock (log) log.Add("first");
            started.TrySetResult();
        }));
        await started.Task;
        // Too long for the running batch's cache (see above), then a short request that would fit: the short one must
        // not join the running batch behind the waiting one's back (later arrivals could keep the batch alive forever).
        var tooLong = scheduler.Enqueue(Request("abc", 100, 0, 0, _ => { lock (log) log.Add("long"); }));
        var shortOne = scheduler.Enqueue(Request("hi", 4, 0, 0, _ => { lock (log) log.Add("short"); }));
        await Task.WhenAll(first, tooLong, shortOne);
        lock (log)
        {
            Assert.True(log.IndexOf("long") > log.LastIndexOf("first"), "the too-long request waited for the next batch");
            Assert.True(log.IndexOf("short") > log.LastIndexOf("first"), "the later short request did not join the draining batch");
        }
    }

    [Fact]
    public async Task ASeededSampledRequestGetsTheSameReplyAloneAndInsideABusyBatch()
    {
        using var model = AiTestSupport.Model();
        GenerationRequest Target() => Request("loop twice", 24, 0.9, 42, topP: 0.9, exit: 0.6);
        long[] alone;
        using (var quiet = new GenerationScheduler(model, 4))
            alone = (await quiet.Enqueue(Target())).Tokens;

        using var scheduler = new GenerationScheduler(model, 4);
        var others = Enumerable.Range(0, 7).Select(i => Request("abc" + i, 10 + 3 * i, i % 3 == 0 ? 0 : 1.2, (ulong)i, exit: i % 2 == 0 ? 0.5 : null)).ToList();
        var busy = others.Take(4).Select(scheduler.Enqueue).ToList();
        var target = scheduler.Enqueue(Target());
        busy.AddRange(others.Skip(4).Select(scheduler.Enqueue));
        await Task.WhenAll(busy);
        Assert.Equal(alone, (await target).Tokens);
        // Greedy and sampled replies do differ (the busy batch really mixed them).
        Assert.NotEqual((await busy[0]).Tokens, (await busy[1]).Tokens);
    }
}
