using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static TorchSharp.torch;

namespace LoopRpt.Model.Kernels;

/// <summary>
/// The attention of a decoding step on the CPU: one query per row and head against the cached keys and values, read
/// where they lie (no repeated key/value heads, no conversion of the cache), in float32 arithmetic whatever the
/// storage type. libtorch's scaled_dot_product_attention costs a dozen operator dispatches per call at short contexts
/// and, in bfloat16, many times its float32 time at long ones (docs/benchmarks.md, "Issue 28, fifth round"). Here a
/// row's heads walk the positions in order, reading each position's keys of all heads in one run (the cache lays a
/// position's heads side by side), then a softmax per head, then the values the same way; rows, and a row's heads
/// where rows are fewer than workers, are split over the torch threads.
/// <para>
/// Semantics are <c>F.scaled_dot_product_attention(q, k, v, mask, 0, causal)</c> with the default scale 1/√D and GQA
/// (query head i reads key/value head i / (h / kv)); <c>causal</c> with one query sees only key 0 (libtorch aligns
/// the causal mask top-left). A row whose keys are all masked gets what libtorch gives it (see <see cref="Attend"/>).
/// </para>
/// </summary>
internal static unsafe class DecodeAttentionKernel
{
    /// <summary>True where <see cref="Attend"/> takes these tensors: CPU, no gradients, q (B, h, 1, D) and k, v (B, kv, L, D)
    /// of one dtype, float32 or bfloat16, each key/value row contiguous, h a multiple of kv; a mask bool or of q's dtype
    /// or float32, broadcastable to (B, h, 1, L).</summary>
    public static bool Supports(Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        if (q.device_type != TorchSharp.DeviceType.CPU || q.requires_grad || k.requires_grad || v.requires_grad) return false;
        if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || q.shape[2] != 1) return false;
        if (q.dtype is not (ScalarType.Float32 or ScalarType.BFloat16) || k.dtype != q.dtype || v.dtype != q.dtype) return false;
        long b = q.shape[0], h = q.shape[1], d = q.shape[3], kv = k.shape[1], len = k.shape[2];
        if (k.shape[0] != b || v.shape[0] != b || v.shape[1] != kv || v.shape[2] != len || k.shape[3] != d || v.shape[3] != d) return false;
        if (kv == 0 || h % kv != 0 || len == 0 || k.stride(3) != 1 || v.stride(3) != 1) return false;
        if (mask is null) return true;
        if (mask.dtype is not (ScalarType.Bool or ScalarType.Float32) && mask.dtype != q.dtype) return false;
        if (mask.dim() > 4 || mask.device_type != TorchSharp.DeviceType.CPU) return false;
        // Broadcastable to (B, h, 1, L): each trailing dimension equal or 1.
        long[] target = [b, h, 1, len];
        for (int i = 1; i <= mask.dim(); i++)
        {
            long m = mask.shape[mask.dim() - i], t = target[4 - i];
            if (m != t && m != 1) return false;
        }
        return true;
    }

    /// <summary>(B, h, 1, D) in q's dtype, in the caller's dispose scope. Call only where <see cref="Supports"/> holds.
    /// A row whose keys are all masked out gets zeros (libtorch 2.10's CPU attention does the same).</summary>
    public static Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor? mask, bool causal, int threads)
    {
        int b = checked((int)q.shape[0]), h = checked((int)q.shape[1]), d = checked((int)q.shape[3]);
        int kv = checked((int)k.shape[1]), len = checked((int)k.shape[2]);
        if (causal) len = 1;                       // one query, causal mask aligned top-left: key 0 only
        bool bf = q.dtype == ScalarType.BFloat16;
        using var scope = NewDisposeScope();
        var qc = q.contiguous();
        var o = empty([b, h, 1, d], q.dtype);
        Tensor? m = mask?.expand(b, h, 1, k.shape[2]);   // broadcast dimensions get stride 0
        var args = new Args
        {
            Q = (nint)FewRowsKernel.DataPtr(qc), K = (nint)FewRowsKernel.DataPtr(k), V = (nint)FewRowsKernel.DataPtr(v),
            O = (nint)FewRowsKernel.DataPtr(o), Mask = m is null ? 0 : (nint)FewRowsKernel.DataPtr(m),
            MaskKind = m is null ? MaskKind.None : m.dtype == ScalarType.Bool ? MaskKind.Bool : m.dtype == ScalarType.Float32 ? MaskKind.Float32 : MaskKind.BFloat16,
            Heads = h, Rep = h / kv, D = d, Length = len, BFloat16 = bf,
            KB = k.stride(0), KH = k.stride(1), KL = k.stride(2), VB = v.stride(0), VH = v.stride(1), VL = v.stride(2),
            MB = m?.stride(0) ?? 0, MH = m?.stride(1) ?? 0, ML = m?.stride(3) ?? 0,
            Scale = 1f / MathF.Sqrt(d),
        };
        // Work units: a row and a range of its key/value heads. A position's keys (and values) of all heads lie side by
        // side in the cache, so a unit walks the positions in order and reads each position's heads in one run; rows
        // are split over the workers, and the heads of each row too where there are fewer rows than workers.
        int splits = Math.Max(1, Math.Min(kv, (threads + b - 1) / b));
        int units = b * splits;
        int workers = Math.Max(1, Math.Min(threads, units));
        if (workers == 1) Units(args, kv, splits, 0, units);
        else
        {
            int per = (units + workers - 1) / workers;
            Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers },
                w => Units(args, kv, splits, w * per, Math.Min(units, (w + 1) * per)));
        }
        return o.MoveToOuterDisposeScope();
    }

    private enum MaskKind { None, Bool, Float32, BFloat16 }

    /// <summary>Addresses (bytes of the tensors' first elements), strides in elements, and sizes of one call.</summary>
    private struct Args
    {
        public nint Q, K, V, O, Mask;
        public MaskKind MaskKind;
        public int Heads, Rep, D, Length;
        public bool BFloat16;
        public long KB, KH, KL, VB, VH, VL, MB, MH, ML;
        public float Scale;
    }

    /// <summary>Units u0..u1: unit u is row u / splits and its key/value heads of split u % splits (of kv heads).</summary>
    private static void Units(in Args a, int kv, int splits, int u0, int u1)
    {
        for (int u = u0; u < u1; u++)
        {
            int row = u / splits, split = u % splits;
            int g0 = (int)((long)kv * split / splits), g1 = (int)((long)kv * (split + 1) / splits);
            Unit(a, row, g0, g1);
        }
    }

    /// <summary>Row <paramref name="row"/>, key/value heads g0..g1 and their query heads.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // fully optimized from the first call
    private static void Unit(in Args a, int row, int g0, int g1)
    {
        int d = a.D, len = a.Length, rep = a.Rep, h0 = g0 * rep, heads = (g1 - g0) * rep;
        long scoreCount = (long)heads * len, bufferFloats = scoreCount + 2L * heads * d;
        float* buffer = (float*)NativeMemory.AlignedAlloc((nuint)(bufferFloats * sizeof(float)), 64);
        try
        {
            float* scores = buffer, q = buffer + scoreCount, acc = q + (long)heads * d;   // scores (heads, L)
            long qAt = ((long)row * a.Heads + h0) * d;
            if (a.BFloat16) Bf16Convert.Widen((ushort*)a.Q + qAt, q, (long)heads * d);
            else new ReadOnlySpan<float>((float*)a.Q + qAt, heads * d).CopyTo(new Span<float>(q, heads * d));

            // Scores, position by position (each position's heads in one run of the cache).
            long mRow = row * a.MB;
            for (int j = 0; j < len; j++)
            {
                long kAt = row * a.KB + j * a.KL;
                for (int g = g0; g < g1; g++)
                    for (int r = 0; r < rep; r++)
                    {
                        int hh = (g - g0) * rep + r;
                        float s;
                        if (!Visible(a, mRow + (h0 + hh) * a.MH + j * a.ML, out float bias)) s = float.NegativeInfinity;
                        else
                        {
                            long at = kAt + g * a.KH;
                            s = (a.BFloat16 ? Dot(q + (long)hh * d, (ushort*)a.K + at, d) : Dot(q + (long)hh * d, (float*)a.K + at, d)) * a.Scale + bias;
                        }
                        scores[(long)hh * len + j] = s;
                    }
            }

            // Softmax per head: the weights stay unnormalized until the end; 1/sum per head kept in place of its max.
            float* inv = stackalloc float[heads];
            for (int hh = 0; hh < heads; hh++)
            {
                float* sc = scores + (long)hh * len;
                float max = float.NegativeInfinity;
                for (int j = 0; j < len; j++) max = MathF.Max(max, sc[j]);
                if (float.IsNegativeInfinity(max))
                {
                    // Every key masked out: zeros, as libtorch's CPU attention gives.
                    new Span<float>(sc, len).Clear();
                    inv[hh] = 0;
                    continue;
                }
                float sum = 0;
                for (int j = 0; j < len; j++)
                {
                    float e = MathF.Exp(sc[j] - max);   // exp(-inf) = 0 for masked keys; a NaN score stays NaN
                    sc[j] = e;
                    sum += e;
                }
                inv[hh] = 1 / sum;
            }

            // Values, position by position.
            new Span<float>(acc, heads * d).Clear();
            for (int j = 0; j < len; j++)
            {
                long vAt = row * a.VB + j * a.VL;
                for (int g = g0; g < g1; g++)
                    for (int r = 0; r < rep; r++)
                    {
                        int hh = (g - g0) * rep + r;
                        float p = scores[(long)hh * len + j];
                        if (p == 0) continue;
                        long at = vAt + g * a.VH;
                        if (a.BFloat16) Axpy(p, (ushort*)a.V + at, acc + (long)hh * d, d);
                        else Axpy(p, (float*)a.V + at, acc + (long)hh * d, d);
                    }
            }
            for (int hh = 0; hh < heads; hh++)
            {
                float* ah = acc + (long)hh * d;
                for (int i = 0; i < d; i++) ah[i] *= inv[hh];
            }
            long oAt = ((long)row * a.Heads + h0) * d;
            if (a.BFloat16) Bf16Convert.Narrow(acc, (ushort*)a.O + oAt, (long)heads * d);
            else new ReadOnlySpan<float>(acc, heads * d).CopyTo(new Span<float>((float*)a.O + oAt, heads * d));
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    /// <summary>Whether key j may be seen, and its additive bias.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Visible(in Args a, long at, out float bias)
    {
        bias = 0;
        switch (a.MaskKind)
        {
            case MaskKind.None: return true;
            case MaskKind.Bool: return ((byte*)a.Mask)[at] != 0;
            case MaskKind.Float32: bias = ((float*)a.Mask)[at]; break;
            default: bias = Bf16Convert.Widen(((ushort*)a.Mask)[at]); break;
        }
        return !float.IsNegativeInfinity(bias);
    }

    /// <summary>16 values at p as float32 (bfloat16 widened), in order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<float> Low, Vector256<float> High) Load16<TW>(TW* p) where TW : unmanaged
    {
        if (typeof(TW) == typeof(float)) return (Vector256.Load((float*)p), Vector256.Load((float*)p + 8));
        var w = Vector256.Load((ushort*)p);
        return (Vector256.ShiftLeft(Vector256.WidenLower(w), 16).AsSingle(), Vector256.ShiftLeft(Vector256.WidenUpper(w), 16).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Scalar<TW>(TW* p) where TW : unmanaged
        => typeof(TW) == typeof(float) ? *(float*)p : Bf16Convert.Widen(*(ushort*)p);

    /// <summary>q · k over d values (k float32 or bfloat16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot<TW>(float* q, TW* k, int d) where TW : unmanaged
    {
        int i = 0;
        var s0 = Vector256<float>.Zero;
        var s1 = Vector256<float>.Zero;
        for (; i + 16 <= d; i += 16)
        {
            var (lo, hi) = Load16(k + i);
            s0 = Vector256.FusedMultiplyAdd(Vector256.Load(q + i), lo, s0);
            s1 = Vector256.FusedMultiplyAdd(Vector256.Load(q + i + 8), hi, s1);
        }
        float s = Vector256.Sum(s0 + s1);
        for (; i < d; i++) s += q[i] * Scalar(k + i);
        return s;
    }

    /// <summary>acc += p · v over d values (v float32 or bfloat16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Axpy<TW>(float p, TW* v, float* acc, int d) where TW : unmanaged
    {
        int i = 0;
        var pv = Vector256.Create(p);
        for (; i + 16 <= d; i += 16)
        {
            var (lo, hi) = Load16(v + i);
            Vector256.FusedMultiplyAdd(pv, lo, Vector256.Load(acc + i)).Store(acc + i);
            Vector256.FusedMultiplyAdd(pv, hi, Vector256.Load(acc + i + 8)).Store(acc + i + 8);
        }
        for (; i < d; i++) acc[i] += p * Scalar(v + i);
    }
}
