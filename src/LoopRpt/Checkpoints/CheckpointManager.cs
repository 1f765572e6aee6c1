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

    /// <summary>
    /// Writes the checkpoint of <paramref name="globalStep"/> through <paramref name="fill"/> and makes it the latest.
    /// Older step directories beyond <see cref="Keep"/> are deleted, except <paramref name="protect"/> (the trainer's last
    /// checkpoint confirmed sane, kept until a newer one is confirmed).
    /// </summary>
    public string Save(long globalStep, Action<string> fill, string? protect = null)
    {
        Directory.CreateDirectory(Root);
        var dir = Path.Combine(Root, StepDirectoryName(globalStep));
        AtomicDirectory.Write(dir, fill);
        AtomicDirectory.WriteAllText(Path.Combine(Root, LatestFile), StepDirectoryName(globalStep) + "\n");
        Prune(protect);
        return dir;
    }

    /// <summary>
    /// Deletes the step directories <paramref name="discard"/> and points <c>latest</c> at <paramref name="latest"/> (a
    /// step directory of this root), or removes the pointer when it is null. The pointer is rewritten first, so a crash
    /// in between leaves <c>latest</c> naming a complete directory.
    /// </summary>
    public void RollBack(string? latest, IEnumerable<string> discard)
    {
        var pointer = Path.Combine(Root, LatestFile);
        if (latest is not null) AtomicDirectory.WriteAllText(pointer, Path.GetFileName(Path.TrimEndingDirectorySeparator(latest)) + "\n");
        else if (File.Exists(pointer)) File.Delete(pointer);
        foreach (var d in discard)
        {
            var full = Path.GetFullPath(d);
            if (!string.Equals(Path.GetDirectoryName(full), Root, StringComparison.Ordinal))
                throw new ArgumentException($"'{d}' is not a step directory of '{Root}'.", nameof(discard));
            if (Directory.Exists(full)) Directory.Delete(full, recursive: true);
        }
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

    private void Prune(string? protect)
    {
        var all = StepDirectories().ToList();
        var keep = protect is null ? null : Path.GetFullPath(protect);
        foreach (var old in all.Take(Math.Max(0, all.Count - Keep)))
            if (!string.Equals(Path.GetFullPath(old), keep, StringComparison.Ordinal)) Directory.Delete(old, recursive: true);
    }
}
