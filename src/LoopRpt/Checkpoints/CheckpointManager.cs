namespace LoopRpt.Checkpoints;

/// <summary>
/// A checkpoint root holds complete step directories <c>step-00000100/</c> (each a model directory plus training state)
/// and a <c>latest</c> file naming the newest. A step directory appears only once fully written (atomic rename), and
/// <c>latest</c> is replaced atomically after it, so killing the process at any moment leaves a loadable checkpoint.
/// </summary>
public sealed class CheckpointManager
{
    public const string LatestFile = "latest";

    public CheckpointManager(string root, int keep = 2)
    {
        if (string.IsNullOrWhiteSpace(root)) throw new ArgumentException("The checkpoint directory must be given.", nameof(root));
        if (keep < 1) throw new ArgumentOutOfRangeException(nameof(keep), keep, "At least one checkpoint must be kept.");
        Root = Path.GetFullPath(root);
        Keep = keep;
    }

    public string Root { get; }
    public int Keep { get; }

    public static string StepDirectoryName(long step) => $"step-{step:D8}";

    /// <summary>Writes the checkpoint of <paramref name="globalStep"/> through <paramref name="fill"/> and makes it the latest.</summary>
    public string Save(long globalStep, Action<string> fill)
    {
        Directory.CreateDirectory(Root);
        var dir = Path.Combine(Root, StepDirectoryName(globalStep));
        AtomicDirectory.Write(dir, fill);
        AtomicDirectory.WriteAllText(Path.Combine(Root, LatestFile), StepDirectoryName(globalStep) + "\n");
        Prune();
        return dir;
    }

    /// <summary>
    /// Removes what an interrupted save left in the root: <c>latest.tmp-*</c> pointer files and <c>step-*.tmp-*</c> folders
    /// (never complete), and restores or removes <c>step-*.old-*</c> folders of an interrupted swap. Call it when opening the
    /// root for writing (the trainer does); a reader must not, as a running writer's save would be deleted under it.
    /// </summary>
    /// <returns>The number of leftovers removed.</returns>
    public int RemoveStaleTemporaries()
    {
        if (!Directory.Exists(Root)) return 0;
        int removed = 0;
        foreach (var f in Directory.GetFiles(Root, LatestFile + ".tmp-*")) { File.Delete(f); removed++; }
        foreach (var d in Directory.GetDirectories(Root, LatestFile + ".tmp-*")) { Directory.Delete(d, recursive: true); removed++; }
        var targets = Directory.GetDirectories(Root, "step-*.tmp-*").Concat(Directory.GetDirectories(Root, "step-*.old-*"))
            .Select(d => Path.GetFileName(d)).Select(n => n[..n.IndexOf('.')]).Distinct(StringComparer.Ordinal).ToList();
        foreach (var name in targets)
        {
            int before = Directory.GetDirectories(Root, name + ".*").Length;
            AtomicDirectory.Recover(Path.Combine(Root, name));
            removed += before - Directory.GetDirectories(Root, name + ".*").Length;
        }
        return removed;
    }

    /// <summary>The newest complete checkpoint directory, or null when there is none.</summary>
    public string? Latest()
    {
        if (!Directory.Exists(Root)) return null;
        var pointer = Path.Combine(Root, LatestFile);
        if (File.Exists(pointer))
        {
            var name = File.ReadAllText(pointer).Trim();
            var dir = Path.Combine(Root, name);
            AtomicDirectory.Recover(dir);
            if (name.StartsWith("step-", StringComparison.Ordinal) && ModelDirectory.IsModelDirectory(dir)) return dir;
        }
        // No or stale pointer: fall back to the highest complete step directory.
        return StepDirectories().LastOrDefault(ModelDirectory.IsModelDirectory);
    }

    private IEnumerable<string> StepDirectories()
        => Directory.GetDirectories(Root, "step-*")
            .Where(d => Path.GetFileName(d).Length == 13 && long.TryParse(Path.GetFileName(d)[5..], out _))
            .Order(StringComparer.Ordinal);

    private void Prune()
    {
        var all = StepDirectories().ToList();
        foreach (var old in all.Take(Math.Max(0, all.Count - Keep))) Directory.Delete(old, recursive: true);
    }
}
