using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace LoopRpt.Model.Kernels;

/// <summary>
/// y = x Wᵀ (+ b) for a few rows of bfloat16 x and bfloat16 weights on CPUs with AVX-512 BF16, with the VDPBF16PS dot
/// products (32 bfloat16 pairs per instruction, float32 sums): twice the multiply-adds per instruction of the widened
/// float32 path, which is what bounds batch 8 (docs/benchmarks.md, "BF16 dot products"). .NET 10 has no intrinsic for
/// it, so the inner tile (four weight rows against four x rows, 16 accumulators) is machine code: the bytes below are
/// what GNU as makes of <c>bf16-dot-tile.s</c> beside this file (<c>assemble-bf16-dot.sh</c> prints them; a test checks
/// they still match where <c>as</c> exists). They are copied into an executable page once and run only where the CPU
/// reports avx512_bf16 and the OS keeps AVX-512 state; elsewhere <see cref="IsSupported"/> is false and nothing runs.
/// </summary>
internal static unsafe class Bf16DotKernel
{
    /// <summary>The machine code of <c>looprpt_bf16_tile4x4</c> (bf16-dot-tile.s).</summary>
    internal static ReadOnlySpan<byte> Code =>
    [
        0x53, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x4c, 0x8d, 0x14, 0x37, 0x4d, 0x8d, 0x1c, 0x32, 0x49,
        0x8d, 0x04, 0x33, 0x4c, 0x8d, 0x2c, 0x30, 0x4c, 0x8b, 0x0a, 0x48, 0x8b, 0x5a, 0x08, 0x4c, 0x8b,
        0x62, 0x10, 0x4c, 0x8b, 0x72, 0x18, 0x48, 0xc1, 0xe1, 0x06, 0x48, 0x89, 0xca, 0x31, 0xc9, 0x62,
        0xf1, 0x7d, 0x48, 0xef, 0xc0, 0x62, 0xf1, 0x75, 0x48, 0xef, 0xc9, 0x62, 0xf1, 0x6d, 0x48, 0xef,
        0xd2, 0x62, 0xf1, 0x65, 0x48, 0xef, 0xdb, 0x62, 0xf1, 0x5d, 0x48, 0xef, 0xe4, 0x62, 0xf1, 0x55,
        0x48, 0xef, 0xed, 0x62, 0xf1, 0x4d, 0x48, 0xef, 0xf6, 0x62, 0xf1, 0x45, 0x48, 0xef, 0xff, 0x62,
        0x51, 0x3d, 0x48, 0xef, 0xc0, 0x62, 0x51, 0x35, 0x48, 0xef, 0xc9, 0x62, 0x51, 0x2d, 0x48, 0xef,
        0xd2, 0x62, 0x51, 0x25, 0x48, 0xef, 0xdb, 0x62, 0x51, 0x1d, 0x48, 0xef, 0xe4, 0x62, 0x51, 0x15,
        0x48, 0xef, 0xed, 0x62, 0x51, 0x0d, 0x48, 0xef, 0xf6, 0x62, 0x51, 0x05, 0x48, 0xef, 0xff, 0x48,
        0x85, 0xd2, 0x0f, 0x84, 0xc3, 0x00, 0x00, 0x00, 0x41, 0x0f, 0x18, 0x54, 0x8d, 0x00, 0x41, 0x0f,
        0x18, 0x54, 0x8d, 0x40, 0x41, 0x0f, 0x18, 0x94, 0x8d, 0x80, 0x00, 0x00, 0x00, 0x41, 0x0f, 0x18,
        0x94, 0x8d, 0xc0, 0x00, 0x00, 0x00, 0x62, 0xe1, 0x7c, 0x48, 0x10, 0x04, 0x0f, 0x62, 0xc1, 0x7c,
        0x48, 0x10, 0x0c, 0x0a, 0x62, 0xc1, 0x7c, 0x48, 0x10, 0x14, 0x0b, 0x62, 0xe1, 0x7c, 0x48, 0x10,
        0x1c, 0x08, 0x62, 0xc1, 0x7c, 0x48, 0x10, 0x24, 0x09, 0x62, 0xe1, 0x7c, 0x48, 0x10, 0x2c, 0x0b,
        0x62, 0xc1, 0x7c, 0x48, 0x10, 0x34, 0x0c, 0x62, 0xc1, 0x7c, 0x48, 0x10, 0x3c, 0x0e, 0x62, 0xb2,
        0x7e, 0x40, 0x52, 0xc4, 0x62, 0xb2, 0x76, 0x40, 0x52, 0xcc, 0x62, 0xb2, 0x6e, 0x40, 0x52, 0xd4,
        0x62, 0xb2, 0x66, 0x40, 0x52, 0xdc, 0x62, 0xb2, 0x7e, 0x40, 0x52, 0xe5, 0x62, 0xb2, 0x76, 0x40,
        0x52, 0xed, 0x62, 0xb2, 0x6e, 0x40, 0x52, 0xf5, 0x62, 0xb2, 0x66, 0x40, 0x52, 0xfd, 0x62, 0x32,
        0x7e, 0x40, 0x52, 0xc6, 0x62, 0x32, 0x76, 0x40, 0x52, 0xce, 0x62, 0x32, 0x6e, 0x40, 0x52, 0xd6,
        0x62, 0x32, 0x66, 0x40, 0x52, 0xde, 0x62, 0x32, 0x7e, 0x40, 0x52, 0xe7, 0x62, 0x32, 0x76, 0x40,
        0x52, 0xef, 0x62, 0x32, 0x6e, 0x40, 0x52, 0xf7, 0x62, 0x32, 0x66, 0x40, 0x52, 0xff, 0x48, 0x83,
        0xc1, 0x40, 0x48, 0x39, 0xd1, 0x0f, 0x82, 0x3d, 0xff, 0xff, 0xff, 0x62, 0xd1, 0x7c, 0x48, 0x11,
        0x00, 0x62, 0xd1, 0x7c, 0x48, 0x11, 0x48, 0x01, 0x62, 0xd1, 0x7c, 0x48, 0x11, 0x50, 0x02, 0x62,
        0xd1, 0x7c, 0x48, 0x11, 0x58, 0x03, 0x62, 0xd1, 0x7c, 0x48, 0x11, 0x60, 0x04, 0x62, 0xd1, 0x7c,
        0x48, 0x11, 0x68, 0x05, 0x62, 0xd1, 0x7c, 0x48, 0x11, 0x70, 0x06, 0x62, 0xd1, 0x7c, 0x48, 0x11,
        0x78, 0x07, 0x62, 0x51, 0x7c, 0x48, 0x11, 0x40, 0x08, 0x62, 0x51, 0x7c, 0x48, 0x11, 0x48, 0x09,
        0x62, 0x51, 0x7c, 0x48, 0x11, 0x50, 0x0a, 0x62, 0x51, 0x7c, 0x48, 0x11, 0x58, 0x0b, 0x62, 0x51,
        0x7c, 0x48, 0x11, 0x60, 0x0c, 0x62, 0x51, 0x7c, 0x48, 0x11, 0x68, 0x0d, 0x62, 0x51, 0x7c, 0x48,
        0x11, 0x70, 0x0e, 0x62, 0x51, 0x7c, 0x48, 0x11, 0x78, 0x0f, 0xc5, 0xf8, 0x77, 0x41, 0x5e, 0x41,
        0x5d, 0x41, 0x5c, 0x5b, 0xc3,
    ];

    private static readonly delegate* unmanaged<ushort*, long, ushort**, long, float*, void> Tile = Load();

    /// <summary>True where the tile runs: Linux x64, AVX-512 usable, avx512_bf16 reported.</summary>
    public static bool IsSupported => Tile != null;

    private const int ProtRead = 1, ProtWrite = 2, ProtExec = 4, MapPrivate = 2, MapAnonymous = 0x20, Page = 4096;

    [DllImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static extern IntPtr MMap(IntPtr addr, nuint length, int prot, int flags, int fd, nint offset);

    [DllImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static extern int MProtect(IntPtr addr, nuint length, int prot);

    private static delegate* unmanaged<ushort*, long, ushort**, long, float*, void> Load()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64 || !System.Runtime.Intrinsics.X86.Avx512F.IsSupported
            || !CpuFeatures.Current.Avx512BF16)
            return null;
        try
        {
            IntPtr page = MMap(IntPtr.Zero, Page, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
            if (page == new IntPtr(-1)) return null;
            Code.CopyTo(new Span<byte>((void*)page, Page));
            if (MProtect(page, Page, ProtRead | ProtExec) != 0) return null;   // the page is then left unused
            return (delegate* unmanaged<ushort*, long, ushort**, long, float*, void>)page;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    /// <summary>x (rows, in) and weight (out, in) bfloat16, bias (out) bfloat16 or null → (rows, out) bfloat16, CPU
    /// tensors, in the caller's dispose scope. Output rows are split over <paramref name="threads"/> workers.</summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias, int threads)
    {
        if (!IsSupported) throw new PlatformNotSupportedException("The BF16 dot-product kernel needs an x86-64 CPU with avx512_bf16 (Linux).");
        FewRowsKernel.CheckArguments(x, weight, bias);
        if (x.dtype != ScalarType.BFloat16 || weight.dtype != ScalarType.BFloat16)
            throw new ArgumentException($"Expected bfloat16 x and weight, got {x.dtype} and {weight.dtype}.");
        int rows = checked((int)x.shape[0]), inF = checked((int)x.shape[1]), outF = checked((int)weight.shape[0]);
        using var scope = NewDisposeScope();
        var xc = x.is_contiguous() ? x.alias() : x.contiguous();
        var wc = weight.is_contiguous() ? weight.alias() : weight.contiguous();
        var bf = bias?.to_type(ScalarType.Float32).contiguous();
        var y = empty([rows, outF], ScalarType.Float32);
        Run((ushort*)FewRowsKernel.DataPtr(xc), rows, (ushort*)FewRowsKernel.DataPtr(wc), bf is null ? null : (float*)FewRowsKernel.DataPtr(bf),
            (float*)FewRowsKernel.DataPtr(y), inF, outF, threads);
        return y.to_type(ScalarType.BFloat16).MoveToOuterDisposeScope();
    }

    /// <summary>The product on raw pointers: x (rows, in) and w (out, in) bfloat16 bits, bias (out) float32 or null, y (rows, out) float32.</summary>
    internal static void Run(ushort* x, int rows, ushort* w, float* bias, float* y, int inF, int outF, int threads)
    {
        if (!IsSupported) throw new PlatformNotSupportedException("The BF16 dot-product kernel needs an x86-64 CPU with avx512_bf16 (Linux).");
        nint xs = (nint)x, ws = (nint)w, bs = (nint)bias, ys = (nint)y;
        FewRowsKernel.ForEachRange(outF, threads, (o0, o1) => Range((ushort*)xs, rows, (ushort*)ws, (float*)bs, (float*)ys, inF, outF, o0, o1));
    }

    /// <summary>Output rows o0..o1: groups of four weight rows through the tile, four x rows at a time (the last x row
    /// repeated where fewer are left; those sums are dropped), the values past the last whole block and the output rows
    /// past the last group of four in scalar float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // fully optimized from the first call
    private static void Range(ushort* x, int rows, ushort* w, float* bias, float* y, int inF, int outF, int o0, int o1)
    {
        const int BlockValues = 32;                      // bfloat16 values per 64-byte block
        long blocks = inF / BlockValues, main = blocks * BlockValues;
        float* acc = stackalloc float[256];
        ushort** xr = stackalloc ushort*[4];
        int o = o0;
        for (; o + 4 <= o1; o += 4)
        {
            ushort* wo = w + (long)o * inF;
            for (int r0 = 0; r0 < rows; r0 += 4)
            {
                for (int i = 0; i < 4; i++) xr[i] = x + (long)Math.Min(r0 + i, rows - 1) * inF;
                Tile(wo, (long)inF * sizeof(ushort), xr, blocks, acc);
                for (int i = 0; i < 4 && r0 + i < rows; i++)
                    for (int j = 0; j < 4; j++)
                    {
                        float s = Vector512.Sum(Vector512.Load(acc + 16 * (4 * i + j)));
                        for (long k = main; k < inF; k++) s += Float(xr[i][k]) * Float(wo[(long)j * inF + k]);
                        y[(long)(r0 + i) * outF + o + j] = s;
                    }
            }
        }
        for (; o < o1; o++)
            for (int r = 0; r < rows; r++)
            {
                float s = 0;
                for (long k = 0; k < inF; k++) s += Float(x[(long)r * inF + k]) * Float(w[(long)o * inF + k]);
                y[(long)r * outF + o] = s;
            }
        if (bias is not null)
            for (int r = 0; r < rows; r++)
                for (int j = o0; j < o1; j++) y[(long)r * outF + j] += bias[j];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Float(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);
}
