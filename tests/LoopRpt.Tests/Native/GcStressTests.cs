using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Tests.AI;
using LoopRpt.Tests.Server;
using TorchSharp;
using Xunit.Abstractions;

namespace LoopRpt.Tests.Native;

/// <summary>
/// The per-step code under a thread that forces collections and finalizers in a tight loop: a TorchSharp Scalar that
/// nobody holds is then finalized while libtorch still reads it ("Unknown scalar type", "Expected false to be true ...
/// c10/core/Scalar.h"). Each phase runs a few seconds on a tiny model and must see no failure at all. The race is
/// narrow, so a run of the code with implicit Scalars fails only sometimes; ImplicitScalarTests is the deterministic
/// check that none are left.
/// </summary>
[Collection(nameof(ServerCollection))]
public class GcStressTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Phase = TimeSpan.FromSeconds(3);
    private const int Workers = 2;

    /// <summary>Runs the work <paramref name="makeWork"/> makes on <see cref="Workers"/> threads for <see cref="Phase"/> while a thread forces
    /// collections and finalizers; returns the number of completed calls and the failures.</summary>
    private (int Calls, IReadOnlyCollection<Exception> Failures) Stress(string what, Func<int, Action> makeWork)
    {
        var failures = new ConcurrentQueue<Exception>();
        int calls = 0, collections = 0;
        using var stop = new CancellationTokenSource();
        var collector = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                GC.Collect(0);   // fresh Scalars are in generation 0; a cheap collection finalizes them soonest
                GC.WaitForPendingFinalizers();
                collections++;
            }
        }) { IsBackground = true };
        var threads = Enumerable.Range(0, Workers).Select(i =>
        {
            var work = makeWork(i);
            return new Thread(() =>
            {
                while (!stop.IsCancellationRequested)
                {
                    try { work(); Interlocked.Increment(ref calls); }
                    catch (Exception e) { failures.Enqueue(e); }
                }
            }) { IsBackground = true };
        }).ToArray();
        collector.Start();
        foreach (var t in threads) t.Start();
        stop.CancelAfter(Phase);
        foreach (var t in threads) Assert.True(t.Join(TimeSpan.FromSeconds(120)), $"{what}: a worker did not finish");
        collector.Join();
        output.WriteLine($"{what}: {calls} calls, {failures.Count} failures, {collections} forced collections");
        foreach (var e in failures.Take(3)) output.WriteLine(e.ToString().Split('\n')[0]);
        return (calls, failures);
    }

    private void AssertClean(string what, (int Calls, IReadOnlyCollection<Exception> Failures) run)
    {
        Assert.True(run.Failures.Count == 0, $"{what}: {run.Failures.Count} of {run.Calls + run.Failures.Count} calls failed; first: {run.Failures.FirstOrDefault()}");
        Assert.True(run.Calls > 0, $"{what}: no call completed");
    }

    private static readonly IReadOnlyList<IReadOnlyList<long>> Prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9]];

    [Fact]
    public void DecodingGreedyAndSampledInBatchesSurvivesForcedFinalization()
    {
        var lm = LoopRpt.Tests.Inference.InferenceTestUtil.SpreadGateModel();
        var run = Stress("decode", i =>
        {
            var generator = new LoopedGenerator(lm);
            var options = new GenerationOptions { MaxNewTokens = 6, BatchSize = 3, Exit = ExitMode.Q(0.6), Temperature = i % 2 == 0 ? 0 : 1, TopP = 0.9, Seed = 7 };
            return () => generator.GenerateBatch(Prompts, options);
        });
        AssertClean("decode", run);
    }

    [Fact]
    public void PerTokenKernelsOnTinyTensorsSurviveForcedFinalization()
    {
        // The per-token pieces alone, on tensors so small that the Scalar-taking calls dominate: sampling, the exit
        // distribution and its exit steps, RoPE, the residual adds and the gold log-probabilities. This phase is the one
        // that fails most often on code with implicit Scalars.
        var lm = LoopRpt.Tests.Inference.InferenceTestUtil.SpreadGateModel();
        var run = Stress("kernels", i =>
        {
            var generator = new torch.Generator(seed: (ulong)(11 + i));
            var logits = torch.randn([2, 16], generator: generator);
            var gates = torch.randn([2, 3, 4], generator: generator);
            var targets = torch.tensor(new long[] { 1, -1, 3, 2, 0, -1 }, [2, 3]);
            var hidden = torch.randn([2, 3, lm.Config.HiddenSize], generator: generator);
            var (cos, sin) = lm.Rope.Get(0, 3, hidden.device, hidden.dtype);
            var heads = torch.randn([2, 1, 3, lm.Config.HeadDim], generator: generator);
            return () =>
            {
                using var scope = torch.NewDisposeScope();
                using var noGrad = torch.no_grad();
                TokenSampler.Pick(logits, 1.0, 0.9, generator);
                TokenSampler.Pick(logits, 0, 1, generator);
                var p = ExitDistribution.Probabilities(gates);
                ExitDistribution.QExitStep(p, 0.5);
                ExitDistribution.MeanExitStep(ExitMode.Last.Steps(p));
                ExitDistribution.ExpectedExitStep(p);
                Rope.Apply(heads, cos, sin);
                lm.GoldLogProbs(hidden, targets);
            };
        });
        AssertClean("kernels", run);
    }

    [Fact]
    public void ScoringAndEmbeddingSurviveForcedFinalization()
    {
        var lm = LoopRpt.Tests.Inference.InferenceTestUtil.SpreadGateModel();
        IReadOnlyList<IReadOnlyList<int>> documents = [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]];
        var scored = Stress("score+embed", i =>
        {
            if (i % 2 == 0)
            {
                var scorer = new DocumentScorer(lm);
                return () => scorer.Score(documents);
            }
            var embedder = new ExitStateEmbedder(lm);
            return () => embedder.Embed(Prompts);
        });
        AssertClean("score+embed", scored);
    }

    [Fact]
    public async Task ServerRequestsSurviveForcedFinalization()
    {
        await using var server = await LoopbackServer.StartAsync(AiTestSupport.Model());
        string[] bodies =
        [
            """{"model":"tiny-test","messages":[{"role":"user","content":"hello"}],"max_tokens":6,"temperature":0}""",
            """{"model":"tiny-test","messages":[{"role":"user","content":"loop"}],"max_tokens":6,"temperature":1,"seed":3}""",
        ];
        var run = Stress("server", i => () =>
        {
            using var chat = new StringContent(bodies[i % bodies.Length], Encoding.UTF8, "application/json");
            using var reply = server.Http.PostAsync("/v1/chat/completions", chat).GetAwaiter().GetResult();
            if (!reply.IsSuccessStatusCode)
                throw new HttpRequestException($"chat {(int)reply.StatusCode}: {reply.Content.ReadAsStringAsync().GetAwaiter().GetResult()}");
            using var embed = new StringContent("""{"model":"tiny-test","input":["abc","hello there"]}""", Encoding.UTF8, "application/json");
            using var embedded = server.Http.PostAsync("/v1/embeddings", embed).GetAwaiter().GetResult();
            if (!embedded.IsSuccessStatusCode)
                throw new HttpRequestException($"embeddings {(int)embedded.StatusCode}: {embedded.Content.ReadAsStringAsync().GetAwaiter().GetResult()}");
        });
        AssertClean("server", run);
    }
}
