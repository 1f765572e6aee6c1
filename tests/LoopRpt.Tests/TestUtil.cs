using LoopRpt.Model;
using LoopRpt.Native;
using static TorchSharp.torch;

namespace LoopRpt.Tests;

internal static class TestUtil
{
    static TestUtil() => TorchNative.EnsureLoaded();

    // This test run's scratch directories live under one root per group and process, deleted when the process exits:
    // the suite used to leave every CLI and experiment test's directory behind (1.9 GB after a few dozen runs).
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> _runRoots = new();

    /// <summary>A new empty directory under the system temp folder (group/run-PID-N/name), removed with the rest of this
    /// test run's directories of that group when the test process exits.</summary>
    public static string TempDir(string group)
    {
        string root = _runRoots.GetOrAdd(group, g =>
        {
            // What an earlier run left (killed before its exit handler finished) goes first: a run whose process is gone.
            var parent = Path.Combine(Path.GetTempPath(), g);
            if (Directory.Exists(parent))
                foreach (var old in Directory.GetDirectories(parent, "run-*"))
                {
                    var parts = Path.GetFileName(old).Split('-');
                    if (parts.Length < 3 || !int.TryParse(parts[1], out int pid) || ProcessAlive(pid)) continue;
                    try { Directory.Delete(old, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
                }
            var r = Path.Combine(parent, $"run-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}");
            Directory.CreateDirectory(r);
            AppDomain.CurrentDomain.ProcessExit += (_, _) =>
            {
                try { Directory.Delete(r, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            };
            return r;
        });
        var d = Path.Combine(root, Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(d);
        return d;
    }

    private static bool ProcessAlive(int pid)
    {
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <summary>A tiny model with a fixed seed; deterministic weights.</summary>
    public static OuroForCausalLM TinyModel(int loops = 4, int vocab = 64, long seed = 1, bool tie = false, int kvHeads = 2)
    {
        TorchNative.EnsureLoaded();
        var c = new OuroConfig
        {
            VocabSize = vocab, HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4,
            NumKeyValueHeads = kvHeads, TotalUtSteps = loops, RopeTheta = 10000, MaxPositionEmbeddings = 256, TieWordEmbeddings = tie,
        };
        using var g = new Generator((ulong)seed);
        return new OuroForCausalLM(c, generator: g);
    }

    public static Tensor RandomIds(long b, long s, int vocab, long seed)
    {
        using var g = new Generator((ulong)seed);
        return randint(0, vocab, [b, s], dtype: ScalarType.Int64, generator: g);
    }

    /// <summary>Same shape and bitwise-equal values.</summary>
    public static bool BitEqual(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    public static float[] ToArray(Tensor t) => t.to_type(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
}
