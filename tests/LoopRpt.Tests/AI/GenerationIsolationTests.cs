using LoopRpt.AI;
using LoopRpt.Inference;
using LoopRpt.Tokenization;

namespace LoopRpt.Tests.AI;

/// <summary>One failing row of a generation batch fails only its own request.</summary>
public class GenerationIsolationTests
{
    /// <summary>A source whose first lease waits for a signal, so the requests queued meanwhile form one batch.</summary>
    private sealed class GatedSource(ILoopRptModelSource inner) : ILoopRptModelSource
    {
        public ManualResetEventSlim Open { get; } = new(false);
        public string ModelId => inner.ModelId;

        public LoopRptModelLease Acquire()
        {
            Open.Wait(TimeSpan.FromSeconds(30));
            return inner.Acquire();
        }
    }

    private static readonly string[] Prompts = ["hello", "abc", "loop twice"];

    private static GenerationRequest Request(string text, Action<LoopRptDelta>? onText)
        => new(codec => new RenderedPrompt(codec.Ids(text), [LettersTokenizer.EndOfText], []),
            new GenerationSettings(8, null, 0, 1, 1, null, GenerationOptions.Defaults.KvCache), onText, CancellationToken.None);

    [Fact]
    public async Task ARowWhoseCallbackThrowsFailsAloneAndTheOthersGetTheirReplies()
    {
        using var model = AiTestSupport.Model();
        // Each reply as its prompt gets it alone (greedy): the independent computation.
        string[] alone;
        using (var single = new GenerationScheduler(model, 4))
            alone = await Task.WhenAll(Prompts.Select(async p => (await single.Enqueue(Request(p, null))).Text));
        Assert.All(alone, a => Assert.NotEmpty(a));                            // every row streams text, so row 1 does fail

        var source = new GatedSource(model);
        using var scheduler = new GenerationScheduler(source, 4);
        var first = scheduler.Enqueue(Request("x", null));                   // the worker holds this one at Acquire
        var streamed = new System.Text.StringBuilder[Prompts.Length];
        var tasks = Prompts.Select((p, i) =>
        {
            streamed[i] = new();
            return scheduler.Enqueue(Request(p, i == 1
                ? _ => throw new InvalidOperationException("the client's stream broke")
                : delta => streamed[i].Append(delta.Text)));
        }).ToArray();
        source.Open.Set();
        await first;

        var broken = await Assert.ThrowsAsync<InvalidOperationException>(() => tasks[1]);
        Assert.Equal("the client's stream broke", broken.Message);
        foreach (int i in new[] { 0, 2 })
        {
            var reply = await tasks[i];
            Assert.Equal(alone[i], reply.Text);
            Assert.Equal(alone[i], streamed[i].ToString());                // streamed once: nothing sent twice
        }
    }
}
