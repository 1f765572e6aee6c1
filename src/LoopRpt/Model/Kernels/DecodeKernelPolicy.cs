using System.Collections.Concurrent;
using System.Diagnostics;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Model.Kernels;

/// <summary>Who multiplies the few rows of a decoding step (<see cref="DecodeKernelPolicy"/>).</summary>
public enum DecodeKernel
{
    /// <summary>Measured: at the first product of each shape, row count and thread count, libtorch and the own kernel
    /// (each vector width and worker count) are timed on the real weights and the fastest is kept. Weights under
    /// <see cref="DecodeKernelPolicy.MinAutoWeightBytes"/> (in cache, small models) stay with libtorch. The default.</summary>
    Auto = 0,

    /// <summary>libtorch's <c>F.linear</c> (bfloat16 weights with float32 compute still use the own kernel: libtorch would
    /// widen the whole weight).</summary>
    Torch = 1,

    /// <summary>The own kernel (<c>FewRowsKernel</c>), widest hardware vectors, one worker per torch thread.</summary>
    Own = 2,
}

/// <summary>One calibration of <see cref="DecodeKernel.Auto"/>: the product, each candidate's fastest time, the pick.</summary>
/// <param name="Product">rows × in → out, the weight and activation dtypes and the torch thread count.</param>
/// <param name="Milliseconds">Each candidate's fastest call.</param>
/// <param name="Chosen">The candidate kept.</param>
public sealed record DecodeKernelChoice(string Product, IReadOnlyDictionary<string, double> Milliseconds, string Chosen)
{
    /// <summary>One line: the product, the candidates' times, the pick.</summary>
    public override string ToString()
        => $"{Product}: {string.Join(", ", Milliseconds.Select(m => $"{m.Key} {m.Value:F3} ms"))} -> {Chosen}";
}

/// <summary>
/// Picks, per CPU and per product shape, who runs the products of a decoding step (up to
/// <see cref="MaxRows"/> rows): libtorch or the own weight-streaming kernel (docs/benchmarks.md, "Decode kernels, prefill memory (issue 28)").
/// The choice is measured, not assumed: which is faster depends on the CPU, the dtype, the shape and how libtorch's
/// OpenMP workers and the kernel's own workers share the cores. <see cref="Mode"/> (or the environment variable
/// <see cref="EnvironmentVariable"/> = auto, torch or own) forces either.
/// </summary>
public static class DecodeKernelPolicy
{
    /// <summary>The environment variable read at start-up for <see cref="Mode"/>: auto, torch or own.</summary>
    public const string EnvironmentVariable = "LOOPRPT_DECODE_KERNEL";

    /// <summary>Products with at most this many rows are decode products.</summary>
    public const int MaxRows = 8;

    /// <summary>Weights smaller than this (4 MiB) stay with libtorch under <see cref="DecodeKernel.Auto"/>: they sit in the
    /// cache, where call overhead, not the weight read, dominates, and small models keep libtorch's exact results.</summary>
    public const long MinAutoWeightBytes = 4L << 20;

    /// <summary>Timed calls per candidate during a calibration (the first of each, a warm-up, is not counted).</summary>
    internal const int CalibrationRounds = 4;

    private static readonly ConcurrentDictionary<ProductKey, Calibration> _calibrations = new();

    /// <summary>One product shape at one thread count (a value key: nothing is formatted or allocated per call).</summary>
    private readonly record struct ProductKey(long Rows, long In, long Out, ScalarType Weight, ScalarType X, int Threads)
    {
        public override string ToString() => $"{Rows} x {In} -> {Out}, {Weight} weights, {X} x, {Threads} thread(s)";
    }

    /// <summary>The process-wide mode (default: <see cref="EnvironmentVariable"/>, else <see cref="DecodeKernel.Auto"/>).</summary>
    public static DecodeKernel Mode { get; set; } = Parse(Environment.GetEnvironmentVariable(EnvironmentVariable) ?? "auto");

    /// <summary>The calibrations made so far in this process, in no particular order.</summary>
    public static IReadOnlyList<DecodeKernelChoice> Choices => _calibrations.Values.Select(c => c.Choice).OfType<DecodeKernelChoice>().ToList();

    /// <summary>Parses auto, torch or own (case-insensitive).</summary>
    public static DecodeKernel Parse(string value) => value.Trim().ToLowerInvariant() switch
    {
        "auto" or "" => DecodeKernel.Auto,
        "torch" or "libtorch" => DecodeKernel.Torch,
        "own" or "kernel" => DecodeKernel.Own,
        _ => throw new ArgumentOutOfRangeException(nameof(value), value, $"{EnvironmentVariable} must be auto, torch or own."),
    };

    /// <summary>A way to run the product: libtorch, or the kernel at a vector width and worker count.</summary>
    private readonly record struct Candidate(bool Torch, KernelIsa Isa, int Threads, bool Dot = false, bool Stream = false)
    {
        public override string ToString() => Torch ? "torch" : Dot ? $"own bf16-dot{(Isa == KernelIsa.Vector256 ? "-256" : "")} x{Threads}"
            : $"own {(int)Isa}-bit{(Stream ? " stream" : "")} x{Threads}";

        public Tensor Run(Tensor x, Tensor w, Tensor? b)
            => Torch ? F.linear(x, w, b) : Dot ? Bf16DotKernel.Linear(x, w, b, Threads, Isa) : FewRowsKernel.Linear(x, w, b, Isa, Threads, streamOneRow: Stream);
    }

    /// <summary>
    /// A decoding step's attention by the library's own kernel, as the decoders run it: the result of
    /// <c>F.scaled_dot_product_attention(q, k, v, mask)</c> (scale 1/√D) for q (B, h, 1, D) and k, v (B, kv, L, D) with
    /// grouped heads (query head i reads key/value head i / (h / kv)), float32 or bfloat16 on the CPU without gradients,
    /// each key and value row contiguous (views of a cache are fine); mask null, boolean (true = may attend) or additive,
    /// broadcastable to (B, h, 1, L). Float32 arithmetic; the result has q's dtype (docs/benchmarks.md, "Issue 28, fifth
    /// round"). Throws <see cref="ArgumentException"/> for tensors the kernel does not take.
    /// </summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, Tensor? mask = null)
    {
        if (!DecodeAttentionKernel.Supports(q, k, v, mask))
            throw new ArgumentException("Expected q (B, h, 1, D) and k, v (B, kv, L, D) of one dtype, float32 or bfloat16, on the CPU without " +
                $"gradients, h a multiple of kv, key and value rows contiguous, and a mask broadcastable to (B, h, 1, L); got q ({string.Join(", ", q.shape)}) " +
                $"{q.dtype}, k ({string.Join(", ", k.shape)}) {k.dtype}, v ({string.Join(", ", v.shape)}) {v.dtype}" +
                (mask is null ? "." : $", mask ({string.Join(", ", mask.shape)}) {mask.dtype}."));
        return DecodeAttentionKernel.Attend(q, k, v, mask, causal: false, get_num_threads());
    }

    /// <summary>
    /// y = x Wᵀ (+ b) for x (rows ≤ <see cref="MaxRows"/>, in) on the CPU without gradients, by the mode's pick; null where
    /// the caller's own path applies (libtorch chosen or forced, or a product the kernel does not take).
    /// </summary>
    internal static Tensor? TryLinear(Tensor x, Tensor weight, Tensor? bias, DecodeKernel mode)
    {
        FinishPending();
        bool mixed = x.dtype == ScalarType.Float32 && weight.dtype == ScalarType.BFloat16;   // bfloat16 storage, float32 compute
        if (!(mixed || (x.dtype == weight.dtype && x.dtype is ScalarType.Float32 or ScalarType.BFloat16))) return null;
        if ((mode == DecodeKernel.Torch && !mixed) || (mode != DecodeKernel.Own && !FewRowsKernel.IsAccelerated)) return null;
        if (mode != DecodeKernel.Auto || weight.numel() * weight.element_size() < MinAutoWeightBytes)
            return mixed || mode == DecodeKernel.Own ? Own(FewRowsKernel.BestIsa).Run(x, weight, bias) : null;
        int threads = get_num_threads();
        var key = new ProductKey(x.shape[0], weight.shape[1], weight.shape[0], weight.dtype, x.dtype, threads);
        bool dot = x.dtype == ScalarType.BFloat16 && weight.dtype == ScalarType.BFloat16 && Bf16DotKernel.IsSupported;
        var calibration = _calibrations.GetOrAdd(key, k => new Calibration(k.ToString(), Candidates(mixed, dot, threads, x.shape[0])));
        // A weight far larger than any cache (the LM head) is read from memory on every call, so its calibration runs
        // all at once here instead of over its first calls (one per decoding step).
        bool inPlace = weight.numel() * weight.element_size() >= InPlaceCalibrationBytes;
        while (true)
        {
            var candidate = calibration.Next(out int index);
            if (candidate.Torch && calibration.Choice is not null) return null;         // libtorch chosen: the caller's path
            long start = Stopwatch.GetTimestamp();
            var y = candidate.Run(x, weight, bias);
            if (index >= 0 && inPlace) calibration.Record(index, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            else if (index >= 0) _pending = new Pending(calibration, index, start);
            if (!inPlace || calibration.Choice is not null) return y;
            y.Dispose();
        }
    }

    /// <summary>A calibration call whose time runs until the next decode product starts on this thread.</summary>
    private sealed record Pending(Calibration Calibration, int Index, long Start);

    // A candidate's time is measured from its start to the start of the next decode product on the same thread: the
    // product and the small libtorch operations after it (norms, RoPE, attention, cache writes). Kernel workers can slow
    // those down (libtorch's OpenMP workers then share the cores with them), which the product's own time does not show:
    // with 2 torch threads, kernels calibrated faster on their own time decoded slower in the model (docs/benchmarks.md,
    // "Decode kernels, prefill memory (issue 28)"). The operations after a product are the same whichever candidate ran.
    [ThreadStatic] private static Pending? _pending;

    private static void FinishPending()
    {
        if (_pending is not { } p) return;
        _pending = null;
        p.Calibration.Record(p.Index, Stopwatch.GetElapsedTime(p.Start).TotalMilliseconds);
    }

    /// <summary>Weights from this size (64 MiB, twice the largest last-level caches of the CPUs measured) calibrate in one call.</summary>
    internal const long InPlaceCalibrationBytes = 64L << 20;

    private static Candidate Own(KernelIsa isa) => new(false, isa, Math.Max(1, get_num_threads()));

    /// <summary>libtorch (unless bfloat16 weights compute in float32), the kernel at each hardware vector width with
    /// one worker per torch thread and with half as many (for one row of x, each also streaming the row instead of the
    /// four-row tiles), and where <paramref name="dot"/> (bfloat16 x and weights on an avx512_bf16 CPU) the BF16
    /// dot-product kernel with as many.</summary>
    private static Candidate[] Candidates(bool mixed, bool dot, int threads, long rows)
    {
        var candidates = new List<Candidate>();
        var workers = new[] { threads, Math.Max(1, threads / 2) }.Distinct().ToArray();
        if (!mixed) candidates.Add(new Candidate(true, KernelIsa.Vector256, threads));
        foreach (var isa in Vector512Accelerated ? new[] { KernelIsa.Vector512, KernelIsa.Vector256 } : [KernelIsa.Vector256])
            foreach (int t in workers)
            {
                candidates.Add(new Candidate(false, isa, t));
                if (rows == 1) candidates.Add(new Candidate(false, isa, t, Stream: true));
            }
        // The BF16 dot kernel's tile at both widths (one row of x takes the same row routine at either: timed once).
        if (dot)
            foreach (var isa in rows > 1 ? new[] { KernelIsa.Vector512, KernelIsa.Vector256 } : [KernelIsa.Vector512])
                foreach (int t in workers)
                    candidates.Add(new Candidate(false, isa, t, Dot: true));
        return [.. candidates];
    }

    /// <summary>
    /// The calibration of one product: its first calls take the candidates in turn, on the real weights inside the real
    /// decoding (so each call reads its weights from memory as decoding does, not from a cache warmed by repeats), and
    /// each call's output is used. A call's time runs until the next decode product starts (<see cref="FinishPending"/>).
    /// After <see cref="CalibrationRounds"/> calls of each, the candidate with the fastest call is kept for the rest of
    /// the process.
    /// </summary>
    private sealed class Calibration(string product, Candidate[] candidates)
    {
        private readonly double[] _best = candidates.Select(_ => double.MaxValue).ToArray();
        private int _calls;
        private Candidate _pick;

        /// <summary>The outcome, or null while calibrating.</summary>
        public DecodeKernelChoice? Choice { get; private set; }

        /// <summary>The candidate to run next; index ≥ 0 asks for its time (<see cref="Record"/>).</summary>
        public Candidate Next(out int index)
        {
            lock (this)
            {
                index = -1;
                if (Choice is not null) return _pick;
                int call = _calls++;
                if (call >= candidates.Length) index = call % candidates.Length;   // the first round warms up
                return candidates[call % candidates.Length];
            }
        }

        public void Record(int index, double milliseconds)
        {
            lock (this)
            {
                _best[index] = Math.Min(_best[index], milliseconds);
                if (Choice is not null || _calls < candidates.Length * CalibrationRounds) return;
                int best = Array.IndexOf(_best, _best.Min());
                _pick = candidates[best];
                Choice = new DecodeKernelChoice(product, candidates.Select((c, i) => (c, i)).ToDictionary(p => p.c.ToString(), p => _best[p.i]), _pick.ToString());
            }
        }
    }

    private static bool Vector512Accelerated => System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated;
}
