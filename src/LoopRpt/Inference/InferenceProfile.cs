using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace LoopRpt.Inference;

/// <summary>
/// Where inference time goes: wall-clock time and calls per section of the adaptive-exit scorer, the prefill and the
/// decoder's ticks, collected while a profile is open on the calling thread.
/// <code>
/// using (var profile = InferenceProfile.Begin())
///     generator.Generate(...);
/// Console.Write(profile.ToMarkdown());
/// </code>
/// Sections: <c>embed</c>, <c>qkv</c> (input norm, q/k/v projections, RoPE), <c>attention</c> (KV-cache writes and reads,
/// scaled dot-product attention), <c>o_proj</c> (output projection, its norm, residual), <c>mlp</c> (sandwich norms,
/// gate/up/down projections, residual), <c>final_norm</c>, <c>exit</c> (exit gate, exit CDF and the bookkeeping of
/// exited tokens), <c>lm_head</c> (logits, read-out or sampling); <c>other</c> is the rest of the elapsed time.
/// </summary>
/// <remarks>
/// Sections are flat (never nested) and cost two timestamp reads each; with no profile open they cost one thread-static
/// read. CPU tensor operations complete before they return, so the times are the operations' own; on CUDA they are
/// launch times unless the device is synchronized. Not thread-safe: a profile belongs to the thread that began it.
/// </remarks>
public sealed class InferenceProfile : IDisposable
{
    [ThreadStatic] private static InferenceProfile? s_current;

    private readonly InferenceProfile? _previous;
    private readonly Dictionary<string, (long Ticks, long Calls)> _sections = [];
    private readonly long _start = Stopwatch.GetTimestamp();
    private long _stop;

    private InferenceProfile() => _previous = s_current;

    /// <summary>Starts profiling the calling thread's inference until the profile is disposed.</summary>
    public static InferenceProfile Begin()
    {
        var profile = new InferenceProfile();
        s_current = profile;
        return profile;
    }

    /// <summary>Time from <see cref="Begin"/> to <see cref="Dispose"/> (or to now while open).</summary>
    public TimeSpan Elapsed => Stopwatch.GetElapsedTime(_start, _stop == 0 ? Stopwatch.GetTimestamp() : _stop);

    /// <summary>The sections in decreasing time, then <c>other</c> (elapsed time outside every section).</summary>
    public IReadOnlyList<ProfileSection> Sections
    {
        get
        {
            var elapsed = Elapsed;
            var list = _sections.OrderByDescending(kv => kv.Value.Ticks)
                .Select(kv => new ProfileSection(kv.Key, Stopwatch.GetElapsedTime(0, kv.Value.Ticks), kv.Value.Calls)).ToList();
            var inside = TimeSpan.FromTicks(list.Sum(s => s.Time.Ticks));
            list.Add(new ProfileSection("other", elapsed > inside ? elapsed - inside : TimeSpan.Zero, 0));
            return list;
        }
    }

    /// <summary>A table: section, milliseconds, share of the elapsed time, calls.</summary>
    public string ToMarkdown()
    {
        var c = CultureInfo.InvariantCulture;
        double total = Elapsed.TotalMilliseconds;
        var sb = new StringBuilder("| section | ms | share | calls |\n|---|---:|---:|---:|\n");
        foreach (var s in Sections)
            sb.Append(c, $"| {s.Name} | {s.Time.TotalMilliseconds:F1} | {100 * s.Time.TotalMilliseconds / Math.Max(total, 1e-9):F1} % | {s.Calls} |\n");
        sb.Append(c, $"| total | {total:F1} | 100 % | |\n");
        return sb.ToString();
    }

    /// <summary>Closes the profile: the thread's previous profile (if any) becomes current again.</summary>
    public void Dispose()
    {
        if (_stop != 0) return;
        _stop = Stopwatch.GetTimestamp();
        if (ReferenceEquals(s_current, this)) s_current = _previous;
    }

    /// <summary>Starts timing section <paramref name="name"/> (a no-op without an open profile).</summary>
    internal static Section Time(string name) => s_current is { } p ? new Section(p, name, Stopwatch.GetTimestamp()) : default;

    private void Add(string name, long ticks)
    {
        _sections.TryGetValue(name, out var v);
        _sections[name] = (v.Ticks + ticks, v.Calls + 1);
    }

    /// <summary>A running section: <see cref="Next"/> ends it and starts the next one, <see cref="Dispose"/> ends it.</summary>
    internal readonly struct Section(InferenceProfile? profile, string name, long start) : IDisposable
    {
        public Section Next(string next)
        {
            if (profile is null) return default;
            long now = Stopwatch.GetTimestamp();
            if (profile._stop == 0) profile.Add(name, now - start);
            return new Section(profile, next, now);
        }

        public void Dispose()
        {
            if (profile is not null && profile._stop == 0) profile.Add(name, Stopwatch.GetTimestamp() - start);
        }
    }
}

/// <summary>One section of an <see cref="InferenceProfile"/>: its total time and how often it ran.</summary>
public sealed record ProfileSection(string Name, TimeSpan Time, long Calls);
