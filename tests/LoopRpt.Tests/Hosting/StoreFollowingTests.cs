using LoopRpt.Checkpoints;
using LoopRpt.Hosting;
using LoopRpt.Model;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Hosting;

/// <summary>
/// A store written by another process: two <see cref="ModelStore"/> instances over one directory stand for two processes
/// (their only shared state is the disk: the pointer file and the writer lock).
/// </summary>
[Collection("Hosting")]
public class StoreFollowingTests
{
    private static readonly int[] Sequence = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 32];

    /// <summary>Mean gold log-prob of the sequence from the core forward directly (an independent computation of what a lease scores).</summary>
    private static double Expected(OuroForCausalLM lm)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var ids = tensor(Sequence.Select(i => (long)i).ToArray(), [1, Sequence.Length]);
        var targets = tensor(Sequence.Skip(1).Select(i => (long)i).Append(-1L).ToArray(), [1, Sequence.Length]);
        return lm.GoldLogProbs(lm.Forward(ids).Hidden[^1], targets).sum().item<float>() / (Sequence.Length - 1);
    }

    [Fact]
    public void APromotionByAnotherStoreIsServedAfterRefreshWhileAHeldLeaseKeepsAnsweringOnTheOldModel()
    {
        using var scratch = new Scratch();
        using var serving = StoreFactory.Open(scratch);
        using var other = StoreFactory.Open(scratch);
        using var a = ModelDirectory.Load(scratch.Initial).Model;
        using var b = TestUtil.TinyModel(vocab: Scratch.Vocab, seed: 9);
        double expectA = Expected(a), expectB = Expected(b);
        Assert.False(Tolerance.Close(expectA, expectB, absolute: 1e-3));

        var held = serving.Acquire();
        Assert.Equal(1, held.Version);
        Assert.False(serving.Refresh());                                     // nothing new yet
        Assert.Equal(2, other.Publish(b, new ModelMeta()));                  // "another process" promotes v2
        Assert.Equal(1, serving.CurrentVersion);                             // not seen until a refresh
        Assert.Equal(2, serving.PointedVersion());
        Assert.True(serving.Refresh());
        Assert.Equal(2, serving.CurrentVersion);
        Assert.Equal(2, serving.LiveModels);                                 // v1 stays alive for the held lease

        // The held lease is used after the swap: same model, same answer, no use after dispose.
        Tolerance.AssertClose(expectA, held.Score([Sequence])[0].MeanLogProb, absolute: 1e-5);
        using (var fresh = serving.Acquire())
        {
            Assert.Equal(2, fresh.Version);
            Tolerance.AssertClose(expectB, fresh.Score([Sequence])[0].MeanLogProb, absolute: 1e-5);
        }
        var oldWeight = held.Model.UniqueParameters()[0].Param;
        held.Dispose();
        Assert.True(oldWeight.IsInvalid);                                    // disposed with its last lease, not before
        Assert.Equal(1, serving.LiveModels);

        Assert.Equal(1, other.Rollback());                                   // back to v1, loaded anew
        Assert.True(serving.Refresh());
        using var back = serving.Acquire();
        Assert.Equal(1, back.Version);
        Tolerance.AssertClose(expectA, back.Score([Sequence])[0].MeanLogProb, absolute: 1e-5);
        Assert.Equal(1, serving.LiveModels);
    }

    [Fact]
    public void PublishWithoutPromotionAddsAVersionThatPromoteServesAndPruningKeepsIt()
    {
        using var scratch = new Scratch();
        using var store = StoreFactory.Open(scratch, keep: 1);
        store.EnsureLoaded();
        using var b = TestUtil.TinyModel(vocab: Scratch.Vocab, seed: 9);
        Assert.Equal(2, store.Publish(b, new ModelMeta(), promote: false));
        Assert.Equal([1, 2], store.Versions());                               // keep 1, but neither the current nor the new one is pruned
        Assert.Equal(1, store.PointedVersion());
        Assert.Equal(1, store.CurrentVersion);
        store.Promote(2);
        Assert.Equal(2, store.CurrentVersion);
        Assert.Equal("v0002", File.ReadAllText(Path.Combine(scratch.Models, ModelStore.CurrentFile)).Trim());
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => store.Promote(7));
        Assert.Contains("holds no version 7", e.Message);
        Assert.Contains("1, 2", e.Message);
        Assert.Equal(2, store.CurrentVersion);                               // a refused promotion changes nothing
        Assert.Equal(1, store.Rollback());
        Assert.Throws<InvalidOperationException>(() => store.Rollback());    // nothing older than v1
    }

    [Fact]
    public async Task WritersInSeveralStoresGetDistinctVersionsUnderTheLock()
    {
        using var scratch = new Scratch();
        using (var first = StoreFactory.Open(scratch)) first.EnsureLoaded();
        using var lm = TestUtil.TinyModel(vocab: Scratch.Vocab, seed: 9);
        var stores = Enumerable.Range(0, 3).Select(_ => StoreFactory.Open(scratch, keep: 20)).ToList();
        try
        {
            // Each store publishes from its own thread: a model is read-only while it is saved, so sharing one is safe.
            var versions = await Task.WhenAll(stores.Select(s => Task.Run(() => Enumerable.Range(0, 2).Select(_ => s.Publish(lm, new ModelMeta(), promote: false)).ToList())));
            Assert.Equal(Enumerable.Range(2, 6), versions.SelectMany(v => v).Order());
            Assert.Equal(Enumerable.Range(1, 7), stores[0].Versions());
            Assert.Empty(scratch.LeftoverTemporaries());
        }
        finally
        {
            stores.ForEach(s => s.Dispose());
        }
    }

    [Fact]
    public async Task TheHostedWatcherServesWhatAnotherStorePromotes()
    {
        using var scratch = new Scratch();
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddLoopRptModelStore(o =>
        {
            o.Root = scratch.Models;
            o.InitialModelDirectory = scratch.Initial;
            o.PollInterval = TimeSpan.FromMilliseconds(50);
        });
        using var host = builder.Build();
        await host.StartAsync();
        try
        {
            var serving = host.Services.GetRequiredService<ModelStore>();
            Assert.Equal(1, serving.CurrentVersion);                         // loaded at start
            using var other = StoreFactory.Open(scratch);
            using var b = TestUtil.TinyModel(vocab: Scratch.Vocab, seed: 9);
            Assert.Equal(2, other.Publish(b, new ModelMeta()));
            Assert.True(SpinWait.SpinUntil(() => serving.CurrentVersion == 2, TimeSpan.FromSeconds(20)), "the watcher did not pick up version 2");
            other.Promote(1);
            Assert.True(SpinWait.SpinUntil(() => serving.CurrentVersion == 1, TimeSpan.FromSeconds(20)), "the watcher did not follow the rollback");
            Assert.True(SpinWait.SpinUntil(() => serving.LiveModels == 1, TimeSpan.FromSeconds(5)));
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task AFollowedVersionThatDoesNotLoadIsLoggedOnceWhileTheServedOneKeepsServing()
    {
        using var scratch = new Scratch();
        var logs = new ListLoggerProvider();
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.AddProvider(logs).SetMinimumLevel(LogLevel.Debug);
        builder.Services.AddLoopRptModelStore(o =>
        {
            o.Root = scratch.Models;
            o.InitialModelDirectory = scratch.Initial;
            o.PollInterval = TimeSpan.FromMilliseconds(30);
        });
        using var host = builder.Build();
        await host.StartAsync();
        try
        {
            var serving = host.Services.GetRequiredService<ModelStore>();
            using var other = StoreFactory.Open(scratch);
            using var b = TestUtil.TinyModel(vocab: Scratch.Vocab, seed: 9);
            Assert.Equal(2, other.Publish(b, new ModelMeta(), promote: false));
            File.WriteAllBytes(Path.Combine(other.VersionDirectory(2), "model.safetensors"), [1, 2, 3]);   // corrupt after the check
            other.Promote(2);                                                    // a store that does not serve only moves the pointer
            Assert.True(SpinWait.SpinUntil(() => logs.Has(LoopRptEventIds.RefreshFailed), TimeSpan.FromSeconds(20)));
            await Task.Delay(300);                                               // about ten more polls
            Assert.Single(logs.Entries, e => e.EventId == LoopRptEventIds.RefreshFailed);
            Assert.Equal(1, serving.CurrentVersion);
            using (var lease = serving.Acquire()) Assert.Equal(1, lease.Version);  // still answering on v1
            Assert.Equal(3, other.Publish(b, new ModelMeta()));
            Assert.True(SpinWait.SpinUntil(() => serving.CurrentVersion == 3, TimeSpan.FromSeconds(20)));
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public void PollIntervalIsValidated()
    {
        var result = new ModelStoreOptionsValidator().Validate(null, new ModelStoreOptions { Root = "x", PollInterval = TimeSpan.FromSeconds(-1) });
        Assert.True(result.Failed);
        Assert.Contains("PollInterval", result.FailureMessage);
    }
}
