using System.Diagnostics.Metrics;

namespace LoopRpt.Inference;

/// <summary>
/// Counters of adaptive generation, published on the <see cref="MeterName"/> meter (System.Diagnostics.Metrics), so that
/// <c>dotnet-counters monitor --counters LoopRpt.Inference</c>, OpenTelemetry or a <see cref="MeterListener"/> can
/// watch how well batched decoding packs its work. A decoding tick is one batched pass through the L layers with every
/// live row at its own loop (docs/adaptive-exit.md, "Staggered decoding"); with B rows the packing is
/// <c>row-loops / (ticks × B)</c>, 1 when no row slot is ever empty. Recording costs nothing while nobody listens.
/// </summary>
public static class InferenceMetrics
{
    /// <summary>The meter's name: <c>LoopRpt.Inference</c>.</summary>
    public const string MeterName = "LoopRpt.Inference";

    private static readonly Meter Meter = new(MeterName);

    /// <summary><c>looprpt.decode.ticks</c>: decoding ticks run (each runs the L layers once for the live rows).</summary>
    internal static readonly Counter<long> Ticks = Meter.CreateCounter<long>("looprpt.decode.ticks", "{tick}",
        "Batched passes through the layers during decoding.");

    /// <summary><c>looprpt.decode.row_loops</c>: loops run by decoded tokens (live rows summed over ticks).</summary>
    internal static readonly Counter<long> RowLoops = Meter.CreateCounter<long>("looprpt.decode.row_loops", "{loop}",
        "Loops run by decoded tokens, summed over rows and ticks.");

    /// <summary><c>looprpt.decode.tokens</c>: tokens sampled while decoding (first tokens sampled by prefill excluded).</summary>
    internal static readonly Counter<long> Tokens = Meter.CreateCounter<long>("looprpt.decode.tokens", "{token}",
        "Tokens sampled by decoding ticks.");
}
