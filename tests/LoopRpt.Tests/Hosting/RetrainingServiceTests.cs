using System.Collections.Concurrent;
using LoopRpt.Training;
using LoopRpt.Checkpoints;
using LoopRpt.Hosting;
using Microsoft.Extensions.Options;

namespace LoopRpt.Tests.Hosting;

[Collection("Hosting")]
public class RetrainingServiceTests
{
    private static readonly int[] Probe = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    private static Dictionary<string, string?> Settings(Scratch scratch, string period = "00:00:00.100") => new()
    {
        ["LoopRpt:Root"] = scratch.Models,
        ["LoopRpt:InitialModelDirectory"] = scratch.Initial,
        ["LoopRpt:Retraining:DataDirectory"] = scratch.Data,
        ["LoopRpt:Retraining:Period"] = period,
        ["LoopRpt:Retraining:DataPollInterval"] = "00:00:00",
        ["LoopRpt:Retraining:BatchSize"] = "2",
        ["LoopRpt:Retraining:SequenceLength"] = "16",
        ["LoopRpt:Retraining:CheckpointEvery"] = "0",
        ["LoopRpt:Retraining:Stages:0:Kind"] = "pretrain",
        ["LoopRpt:Retraining:Stages:0:Steps"] = "6",
        ["LoopRpt:Retraining:Stages:0:LearningRate"] = "0.01",
        ["LoopRpt:Retraining:Stages:0:WarmupFraction"] = "0.1",
        ["LoopRpt:Retraining:Stages:0:Parameters:Beta"] = "0.05",
    };

    [Fact]
    public async Task ScheduledRoundsPromoteABetterModelWhileScorersKeepAnswering()
    {
        using var scratch = new Scratch();
        scratch.WriteData();
        await using var host = TestHost.FromConfiguration(Settings(scratch));
        var first = host.NextRound();
        var second = host.NextRound(r => r.Round == 2);
        await host.Host.StartAsync();

        // Scorers run on their own threads for the whole test, across the promotions.
        var stop = new CancellationTokenSource();
        var errors = new ConcurrentQueue<Exception>();
        var versions = new ConcurrentDictionary<int, bool>();
        var scorers = Enumerable.Range(0, 2).Select(_ => Task.Factory.StartNew(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    using var lease = host.Store.Acquire();
                    var s = lease.Score([Probe])[0];
                    if (!double.IsFinite(s.MeanLogProb)) throw new InvalidOperationException("non-finite score");
                    versions[s.Version] = true;
                }
                catch (Exception e) { errors.Enqueue(e); }
            }
        }, TaskCreationOptions.LongRunning)).ToArray();

        var r1 = await first;
        Assert.Equal(RoundOutcome.Promoted, r1.Outcome);
        Assert.Equal("schedule", r1.Reason);
        Assert.Equal(1, r1.BaseVersion);
        Assert.Equal(2, r1.PromotedVersion);
        Assert.True(r1.CandidateMetric < r1.ServingMetric, $"{r1.CandidateMetric} vs {r1.ServingMetric}");
        var r2 = await second;                                 // the timer keeps going
        Assert.NotEqual(RoundOutcome.Failed, r2.Outcome);
        Assert.Equal(2, r2.BaseVersion);

        stop.Cancel();
        await Task.WhenAll(scorers);
        Assert.Empty(errors);
        Assert.NotEmpty(versions);
        Assert.All(versions.Keys, v => Assert.InRange(v, 1, host.Store.CurrentVersion));

        // The promoted directory carries the history and the validation figure, and scoring it independently agrees.
        var meta = ModelDirectory.ReadMeta(host.Store.VersionDirectory(2));
        Assert.Equal("pretrain", meta.Stages[^1].Name);
        Assert.Equal(6, meta.Step);
        Tolerance.AssertClose(r1.CandidateMetric!.Value, meta.Metrics["holdout_loss"][0], absolute: 1e-9);
        // The rest of the meta: the serving version's history plus this round's plan, its tokens, its last training report, the tokenizer.
        var v1 = ModelDirectory.ReadMeta(host.Store.VersionDirectory(1));
        Assert.Equal(v1.Stages.Append(new StageRecord("pretrain", 6)), meta.Stages);
        Assert.Equal(v1.TokensSeen + 6 * 2 * 16, meta.TokensSeen);
        Assert.Equal(["holdout_accuracy", "holdout_loss", "loss"], meta.Metrics.Keys.Where(k => k is "loss" or "holdout_loss" or "holdout_accuracy").Order());
        Assert.Equal("bytes", meta.Tokenizer!["kind"]!.GetValue<string>());
        var (_, heldOut) = DataFolder.Load(scratch.Data, null, RetrainingOptions.Defaults.HoldoutFraction, new ByteTokenizerService(), Scratch.Vocab);
        using (var v2 = ModelDirectory.Load(host.Store.VersionDirectory(2)).Model)
            Tolerance.AssertClose(r1.CandidateMetric.Value, HeldOutEvaluator.Evaluate(v2, heldOut, 16, 2, LoopRpt.Model.ExitMode.Last).Loss, absolute: 1e-5);

        var status = host.Service.Status;
        Assert.True(status.RoundsRun >= 2);
        Assert.NotNull(status.LastPromotionUtc);
        Assert.Null(status.LastError);
        Assert.True(host.Logs.Has(LoopRptEventIds.RoundPromoted));
        await host.Host.StopAsync();
        Assert.Equal(1, host.Store.LiveModels);                // replaced models were disposed
    }

    [Fact]
    public async Task ACandidateThatFailsValidationIsNotPromoted()
    {
        using var scratch = new Scratch();
        scratch.WriteData();
        await using var host = TestHost.Create(scratch, r => r.MinImprovement = 50);
        await host.Host.StartAsync();
        var report = await host.RunRound();
        Assert.Equal(RoundOutcome.Rejected, report.Outcome);
        Assert.True(report.CandidateMetric < report.ServingMetric);   // it did learn, just not by the margin
        Assert.Contains("margin", report.Message);
        Assert.Equal(1, host.Store.CurrentVersion);
        Assert.Equal([1], host.Store.Versions());
        Assert.False(Directory.Exists(Path.Combine(scratch.Models, "training", "checkpoints")));
        Assert.True(host.Logs.Has(LoopRptEventIds.RoundRejected));
    }

    [Fact]
    public async Task AThrowingRoundKeepsTheOldModelServingAndTheNextRoundRuns()
    {
        using var scratch = new Scratch();
        scratch.WriteData();
        var trainingThreads = new ConcurrentBag<int>();
        await using var host = TestHost.Create(scratch, r => r.Stages = [TestHost.Pretrain(4, "boom")],
            b => b.AddStageKind(new ObjectiveKind<object>("boom", (_, _) => new HookedObjective(step =>
            {
                trainingThreads.Add(Environment.CurrentManagedThreadId);
                if (step == 1) throw new InvalidOperationException("boom at step 1");
            }))));
        await host.Host.StartAsync();
        using var held = host.Store.Acquire();
        var before = held.Score([Probe])[0].MeanLogProb;

        var r1 = await host.RunRound();
        var r2 = await host.RunRound();
        Assert.Equal(RoundOutcome.Failed, r1.Outcome);
        Assert.Equal(RoundOutcome.Failed, r2.Outcome);
        Assert.Equal(r1.Round + 1, r2.Round);
        Assert.IsType<InvalidOperationException>(r1.Error);
        // bitwise: a failed round leaves the held model untouched: the same model scores the same probe
        Assert.Equal(before, held.Score([Probe])[0].MeanLogProb);
        using (var now = host.Store.Acquire()) Assert.Equal(1, now.Version);
        var status = host.Service.Status;
        Assert.Equal(2, status.RoundsFailed);
        Assert.Contains("boom", status.LastError);
        Assert.Equal(1, status.CurrentVersion);
        Assert.True(host.Logs.Has(LoopRptEventIds.RoundFailed));
        // Both rounds' tensor work ran on one dedicated thread (dispose scopes are thread-local), not the test's.
        Assert.Equal(4, trainingThreads.Count);
        Assert.Single(trainingThreads.Distinct());
        Assert.NotEqual(Environment.CurrentManagedThreadId, trainingThreads.First());
    }

    [Fact]
    public async Task BadDataFailsTheRoundNamingTheFileAndFixedDataTrainsAgain()
    {
        using var scratch = new Scratch();
        scratch.WriteData();
        var bad = Path.Combine(scratch.Data, "bad.tokens");
        File.WriteAllBytes(bad, [1, 2, 3, 4, 5]);
        await using var host = TestHost.Create(scratch);
        await host.Host.StartAsync();

        var failed = await host.RunRound();
        Assert.Equal(RoundOutcome.Failed, failed.Outcome);
        Assert.IsType<InvalidDataException>(failed.Error);
        Assert.Contains("bad.tokens", failed.Message);
        Assert.Equal(1, host.Store.CurrentVersion);

        File.Delete(bad);
        var fixedRound = await host.RunRound();
        Assert.Equal(RoundOutcome.Promoted, fixedRound.Outcome);
        Assert.Equal(2, host.Store.CurrentVersion);
        Assert.Contains("bad.tokens", host.Service.Status.LastError);    // the last error stays readable
    }

    [Fact]
    public async Task NewDataInTheFolderTriggersARound()
    {
        using var scratch = new Scratch();
        await using var host = TestHost.Create(scratch, r => r.DataPollInterval = TimeSpan.FromMilliseconds(50));
        var next = host.NextRound();
        await host.Host.StartAsync();
        scratch.WriteData("landed.tokens");
        var report = await next;
        Assert.Equal("data", report.Reason);
        Assert.Equal(RoundOutcome.Promoted, report.Outcome);
        Assert.True(host.Logs.Has(LoopRptEventIds.DataChanged));
    }

    [Fact]
    public async Task ShutdownMidTrainingLeavesALoadableCheckpointAndTheNextStartResumesIt()
    {
        using var scratch = new Scratch();
        scratch.WriteData();
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        TestHost? first = null;
        first = TestHost.Create(scratch, r => r.Stages = [TestHost.Pretrain(6, "hooked")],
            b => b.AddStageKind(new ObjectiveKind<object>("hooked", (_, _) => new HookedObjective(step =>
            {
                if (step != 2) return;
                reached.TrySetResult();
                // Hold step 2 until the host's shutdown has reached the service, so the stop lands mid-plan.
                SpinWait.SpinUntil(() => first!.Service.StoppingToken.IsCancellationRequested, TimeSpan.FromSeconds(60));
            }))));
        RoundReport canceled;
        await using (first)
        {
            await first.Host.StartAsync();
            var next = first.NextRound();
            first.Service.RequestRound();
            await reached.Task.WaitAsync(TimeSpan.FromSeconds(60));
            await first.Host.StopAsync();
            canceled = await next;
        }

        Assert.Equal(RoundOutcome.Canceled, canceled.Outcome);
        var checkpoint = new CheckpointManager(Path.Combine(scratch.Models, "training", "checkpoints")).Latest();
        Assert.NotNull(checkpoint);
        using (var loaded = ModelDirectory.Load(checkpoint).Model) Assert.Equal(Scratch.Vocab, loaded.Config.VocabSize);
        Assert.Equal(3, ModelDirectory.ReadMeta(checkpoint).Step);       // steps 0..2 done, stopped before step 3
        Assert.Empty(scratch.LeftoverTemporaries());
        Assert.Contains("running", File.ReadAllText(Path.Combine(scratch.Models, "training", RetrainingRound.StateFile)), StringComparison.OrdinalIgnoreCase);
        Assert.Equal([1], StoreFactory.Open(scratch).Versions());

        await using var second = TestHost.Create(scratch, r => r.Stages = [TestHost.Pretrain(6, "hooked")],
            b => b.AddStageKind(new ObjectiveKind<object>("hooked", (_, _) => new HookedObjective(_ => { }))));
        var resumedTask = second.NextRound();
        await second.Host.StartAsync();
        var resumed = await resumedTask;
        Assert.Equal("resume", resumed.Reason);
        Assert.Equal(canceled.Round, resumed.Round);
        Assert.Equal(3, resumed.ResumedFromStep);
        Assert.Contains(resumed.Outcome, new[] { RoundOutcome.Promoted, RoundOutcome.Rejected });
        Assert.True(second.Logs.Has(LoopRptEventIds.RoundResuming));
    }

    [Fact]
    public async Task InvalidOptionsFailAtStartWithMessagesNamingEachOption()
    {
        using var scratch = new Scratch();
        var settings = Settings(scratch);
        settings["LoopRpt:Root"] = "";
        settings["LoopRpt:Device"] = "tpu";
        settings["LoopRpt:Retraining:BatchSize"] = "0";
        settings["LoopRpt:Retraining:MinImprovement"] = "-1";
        settings["LoopRpt:Retraining:SpikeFactor"] = "1";
        settings["LoopRpt:Retraining:SpikePatience"] = "0";
        settings["LoopRpt:Retraining:ValidationExit"] = "q:2";
        settings["LoopRpt:Retraining:Stages:0:Steps"] = "0";
        settings["LoopRpt:Retraining:Stages:1:Kind"] = "nope";
        settings["LoopRpt:Retraining:Stages:1:Steps"] = "5";
        settings["LoopRpt:Retraining:Stages:2:Kind"] = "gate";
        settings["LoopRpt:Retraining:Stages:2:Steps"] = "5";
        settings["LoopRpt:Retraining:Stages:2:Parameters:Beta"] = "0.1";
        await using var host = TestHost.FromConfiguration(settings);

        var e = await Assert.ThrowsAnyAsync<Exception>(() => host.Host.StartAsync());
        var failures = (e is AggregateException a ? a.InnerExceptions : [e]).ToList();
        Assert.All(failures, f => Assert.IsType<OptionsValidationException>(f));
        var text = string.Join("\n", failures.Select(f => f.Message));
        Assert.Contains("ModelStoreOptions.Root is required", text);
        Assert.Contains("ModelStoreOptions.Device must be 'cpu', 'cuda' or 'cuda:N'; got 'tpu'", text);
        Assert.Contains("RetrainingOptions.BatchSize must be at least 1; got 0", text);
        Assert.Contains("RetrainingOptions.MinImprovement must be a non-negative number; got -1", text);
        Assert.Contains("RetrainingOptions.SpikeFactor must be 0 (rule off) or a finite number above 1; got 1", text);
        Assert.Contains("RetrainingOptions.SpikePatience must be at least 1; got 0", text);
        Assert.Contains("RetrainingOptions.ValidationExit: 'q:2' is not an exit rule", text);
        Assert.Contains("RetrainingOptions.Stages[0] ('pretrain').Steps must be at least 1; got 0", text);
        Assert.Contains("RetrainingOptions.Stages[1] ('nope'): 'nope' is not a known stage kind; known kinds: gate, looprpt, pretrain.", text);
        Assert.Contains("RetrainingOptions.Stages[2] ('gate'): unknown parameter 'Beta'; a gate stage takes K, Gamma.", text);
        Assert.False(Directory.Exists(scratch.Models));      // nothing was created before validation failed
    }
}
