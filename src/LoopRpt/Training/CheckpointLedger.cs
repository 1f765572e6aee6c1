using LoopRpt.Checkpoints;

namespace LoopRpt.Training;

/// <summary>
/// A training run's checkpoints and what is known of them: <see cref="Confirmed"/>, the newest whose following loss was read
/// and sane (or the checkpoint resumed from), and the pending ones written after it, not yet judged. A checkpoint holds the
/// weights of the step after it, so only the next loss read can clear it; <see cref="DivergenceGuard"/> confirms or
/// discards them, and pending ones are never pruned below the confirmed one.
/// </summary>
internal sealed class CheckpointLedger(CheckpointManager manager, string? confirmed)
{
    private readonly List<(string Dir, long Step)> _pending = [];

    public CheckpointManager Manager { get; } = manager;
    public string? Confirmed { get; private set; } = confirmed;

    /// <summary>The newest checkpoint of this run (pending or confirmed).</summary>
    public string? Latest => _pending.Count > 0 ? _pending[^1].Dir : Confirmed;

    public bool HasPending => _pending.Count > 0;

    public string Save(long step, Action<string> fill)
    {
        var dir = Manager.Save(step, fill, protect: Confirmed);
        // Pruned beyond KeepCheckpoints (never the confirmed one), or rewritten: no longer tracked.
        _pending.RemoveAll(p => string.Equals(p.Dir, dir, StringComparison.Ordinal) || !Directory.Exists(p.Dir));
        if (!string.Equals(dir, Confirmed, StringComparison.Ordinal)) _pending.Add((dir, step));
        return dir;
    }

    /// <summary>The pending checkpoints of global step &lt;= <paramref name="step"/> are sane; the newest becomes <see cref="Confirmed"/>.</summary>
    public void ConfirmThrough(long step)
    {
        int n = _pending.FindLastIndex(p => p.Step <= step) + 1;
        if (n == 0) return;
        Confirmed = _pending[n - 1].Dir;
        _pending.RemoveRange(0, n);
    }

    /// <summary>Removes the pending checkpoints of global step &gt;= <paramref name="step"/> and points <c>latest</c> back; returns how many.</summary>
    public int DiscardFrom(long step)
    {
        var doomed = _pending.Where(p => p.Step >= step).Select(p => p.Dir).ToList();
        if (doomed.Count == 0) return 0;
        _pending.RemoveAll(p => p.Step >= step);
        Manager.RollBack(Latest, doomed);
        return doomed.Count;
    }
}
