using LoopRpt.Checkpoints;
using LoopRpt.Hosting;
using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Hosting;

[Collection("Hosting")]
public class ModelStoreTests
{
    private static readonly int[] Sequence = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 32];

    /// <summary>Mean gold log-prob of tokens 1..n-1 computed with the core API directly (GoldLogProbs on the last step).</summary>
    private static double ExpectedMeanLogProb(OuroForCausalLM lm, int[] seq)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var ids = tensor(seq.Select(i => (long)i).ToArray(), [1, seq.Length]);
        var targets = tensor(seq.Skip(1).Select(i => (long)i).Append(-1L).ToArray(), [1, seq.Length]);
        var gold = lm.GoldLogProbs(lm.Forward(ids).Hidden[^1], targets);
        return gold.sum().item<float>() / (seq.Length - 1);
    }

    [Fact]
    public void EmptyStoreImportsTheInitialModelAsVersionOne()
    {
        using var scratch = new Scratch();
        using var store = StoreFactory.Open(scratch);
        using var lease = store.Acquire();
        Assert.Equal(1, lease.Version);
        Assert.Equal("v0001", File.ReadAllText(Path.Combine(scratch.Models, ModelStore.CurrentFile)).Trim());
        Assert.Equal([1], store.Versions());
        using var original = ModelDirectory.Load(scratch.Initial).Model;
        var score = lease.Score([Sequence])[0];
        Tolerance.AssertClose(ExpectedMeanLogProb(original, Sequence), score.MeanLogProb, absolute: 1e-5);
        Assert.Equal(1, score.Version);
    }

    [Fact]
    public void EmptyStoreWithoutAnInitialModelFailsNamingTheOptions()
    {
        using var scratch = new Scratch();
        using var store = StoreFactory.Open(scratch, initial: false);
        var e = Assert.Throws<InvalidOperationException>(store.EnsureLoaded);
        Assert.Contains("InitialModelDirectory", e.Message);
        Assert.Contains("InitialPreset", e.Message);
    }

    [Fact]
    public void PublishKeepsABoundedHistoryAndARestartServesTheLatest()
    {
        using var scratch = new Scratch();
        using (var store = StoreFactory.Open(scratch, keep: 2))
        {
            store.EnsureLoaded();
            for (int i = 0; i < 3; i++)
            {
                using var lm = TestUtil.TinyModel(vocab: Scratch.Vocab, seed: 20 + i);
                Assert.Equal(i + 2, store.Publish(lm, new ModelMeta { Step = i }));
            }
            Assert.Equal([3, 4], store.Versions());
            Assert.Equal(4, store.CurrentVersion);
            Assert.Equal(1, store.LiveModels);
        }
        Assert.Equal("v0004", File.ReadAllText(Path.Combine(scratch.Models, ModelStore.CurrentFile)).Trim());
        Assert.Empty(scratch.LeftoverTemporaries());
        using var reopened = StoreFactory.Open(scratch, keep: 2);
        using var lease = reopened.Acquire();
        Assert.Equal(4, lease.Version);
        Assert.Equal(2, lease.Meta.Step);
        using var expected = TestUtil.TinyModel(vocab: Scratch.Vocab, seed: 22);
        Tolerance.AssertClose(ExpectedMeanLogProb(expected, Sequence), lease.Score([Sequence])[0].MeanLogProb, absolute: 1e-5);
    }

    [Fact]
    public void TheOldModelIsDisposedOnlyWhenItsLastLeaseIsReleased()
    {
        using var scratch = new Scratch();
        using var store = StoreFactory.Open(scratch);
        var old = store.Acquire();
        var oldWeight = old.Model.UniqueParameters()[0].Param;
        using (var lm = TestUtil.TinyModel(vocab: Scratch.Vocab, seed: 9)) store.Publish(lm, new ModelMeta());

        Assert.Equal(2, store.LiveModels);
        Assert.Equal(1, old.Version);
        Assert.False(oldWeight.IsInvalid);
        Assert.True(double.IsFinite(old.Score([Sequence])[0].MeanLogProb));      // still answers after the swap
        using (var fresh = store.Acquire()) Assert.Equal(2, fresh.Version);

        old.Dispose();
        old.Dispose();                                                            // idempotent
        Assert.Equal(1, store.LiveModels);
        Assert.True(oldWeight.IsInvalid);
        Assert.Throws<ObjectDisposedException>(() => old.Model);
    }

    [Fact]
    public void ScorersKeepAnsweringCorrectlyDuringSwapsUnderConcurrentLoad()
    {
        using var scratch = new Scratch();
        using var store = StoreFactory.Open(scratch);
        // Versions alternate between two weight sets: odd = the initial model, even = seed 9.
        double expectOdd, expectEven;
        using (var a = ModelDirectory.Load(scratch.Initial).Model) expectOdd = ExpectedMeanLogProb(a, Sequence);
        using (var b = TestUtil.TinyModel(vocab: Scratch.Vocab, seed: 9)) expectEven = ExpectedMeanLogProb(b, Sequence);
        Assert.False(Tolerance.Close(expectOdd, expectEven, absolute: 1e-3), $"the two weight sets must score apart: {expectOdd} vs {expectEven}");

        const int scorers = 4, swaps = 6;
        long scored = 0;
        var stop = false;
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var seen = new System.Collections.Concurrent.ConcurrentDictionary<int, int>();
        var threads = Enumerable.Range(0, scorers).Select(_ => new Thread(() =>
        {
            while (!Volatile.Read(ref stop))
            {
                try
                {
                    using var lease = store.Acquire();
                    var s = lease.Score([Sequence, Sequence[..5]])[0];
                    var expected = s.Version % 2 == 1 ? expectOdd : expectEven;
                    if (Math.Abs(s.MeanLogProb - expected) > 1e-4) errors.Enqueue($"version {s.Version}: {s.MeanLogProb} != {expected}");
                    seen.AddOrUpdate(s.Version, 1, (_, n) => n + 1);
                    Interlocked.Increment(ref scored);
                }
                catch (Exception e)
                {
                    errors.Enqueue(e.ToString());
                }
            }
        })).ToList();
        threads.ForEach(t => t.Start());

        using var seed9 = TestUtil.TinyModel(vocab: Scratch.Vocab, seed: 9);
        using var initial = ModelDirectory.Load(scratch.Initial).Model;
        for (int i = 0; i < swaps; i++)
        {
            // Each swap happens while scorers are demonstrably mid-flight: wait for fresh scores first.
            long before = Interlocked.Read(ref scored);
            Assert.True(SpinWait.SpinUntil(() => Interlocked.Read(ref scored) >= before + scorers, TimeSpan.FromSeconds(30)));
            store.Publish(i % 2 == 0 ? seed9 : initial, new ModelMeta());
        }
        long last = Interlocked.Read(ref scored);
        Assert.True(SpinWait.SpinUntil(() => Interlocked.Read(ref scored) >= last + scorers, TimeSpan.FromSeconds(30)));
        Volatile.Write(ref stop, true);
        threads.ForEach(t => t.Join());

        Assert.Empty(errors);
        Assert.True(seen.Count >= 2, $"scorers saw versions {string.Join(",", seen.Keys)}");
        Assert.Equal(1 + swaps, store.CurrentVersion);
        Assert.Equal(1, store.LiveModels);               // every replaced model was disposed once its leases were gone
    }
}
