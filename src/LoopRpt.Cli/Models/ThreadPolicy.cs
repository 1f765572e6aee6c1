using System.Globalization;

namespace LoopRpt.Cli.Models;

/// <summary>The libtorch intra-op thread count a verb runs with, and why (printed by <c>env</c> and at the start of <c>train</c>).</summary>
/// <param name="Threads">Threads to use.</param>
/// <param name="Reason">One line: where the number comes from.</param>
/// <param name="Automatic">False when <c>--threads N</c> or OMP_NUM_THREADS chose it.</param>
internal sealed record ThreadChoice(int Threads, string Reason, bool Automatic);

/// <summary>
/// The default of <c>--threads</c> (0 = automatic). libtorch's own default is one thread per physical core; when another
/// job already occupies cores its OpenMP threads wait on each other and a small model trains 4–9× slower than with one
/// thread (measured on 2 cores: README "Threads"). So the automatic choice is the physical cores that are free — cores
/// minus the 1-minute load average, rounded, at least 1 — and a single thread for small models, whose matrices are too
/// small to gain from a second thread even on an idle machine.
/// </summary>
internal static class ThreadPolicy
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    /// <summary>Models with fewer parameters than this run on one thread by default (<c>tiny</c> at vocabulary 512 has 0.16M, <c>small</c> 1.8M).</summary>
    public const long SmallModelParameters = 2_000_000;

    /// <summary>
    /// The thread count for <paramref name="requested"/> (--threads; 0 = automatic), from this machine's cores and load.
    /// <paramref name="parameters"/>: the model's size when known (null: before a model exists, e.g. <c>env</c>).
    /// </summary>
    public static ThreadChoice Resolve(int requested, long? parameters)
        => Choose(requested, PhysicalCores(), Environment.ProcessorCount, HostProcessors(), LoadAverage(), parameters, Environment.GetEnvironmentVariable("OMP_NUM_THREADS"));

    /// <summary>
    /// The policy itself, from its inputs (tests call it with fixed ones). <paramref name="logicalCores"/> is what this
    /// process may use (<see cref="Environment.ProcessorCount"/>: affinity and container limits applied);
    /// <paramref name="hostProcessors"/> what /proc/cpuinfo lists: when a container sees more processors than it may use,
    /// the load average is the host's and is scaled down to this process's share.
    /// </summary>
    public static ThreadChoice Choose(int requested, int physicalCores, int logicalCores, int hostProcessors, double? loadAverage, long? parameters, string? ompNumThreads)
    {
        if (requested > 0) return new(requested, $"--threads {requested}", Automatic: false);
        if (int.TryParse(ompNumThreads, NumberStyles.Integer, C, out var omp) && omp > 0)
            return new(omp, $"OMP_NUM_THREADS={omp}", Automatic: false);
        int cores = Math.Max(1, Math.Min(physicalCores, logicalCores));
        string size = parameters is { } p ? string.Create(C, $"{p / 1e6:0.##}M parameters") : "";
        if (parameters is { } n && n < SmallModelParameters)
            return new(1, string.Create(C, $"automatic: a model of {size} (under {SmallModelParameters / 1e6:0.#}M) runs fastest on one thread"), Automatic: true);
        if (loadAverage is not { } load)
            return new(cores, $"automatic: {Cores(cores)}, load unknown (no /proc/loadavg)", Automatic: true);
        double share = hostProcessors > logicalCores && hostProcessors > 0 ? load * logicalCores / hostProcessors : load;
        int busy = Math.Clamp((int)Math.Round(share, MidpointRounding.AwayFromZero), 0, cores);
        int free = Math.Max(1, cores - busy);
        var why = string.Create(C, $"automatic: {Cores(cores)} minus {busy} busy (1-minute load average {load:0.00}{(share != load ? string.Create(C, $", {share:0.00} of this process's {logicalCores} processors") : "")})");
        if (size.Length > 0) why += $"; a model of {size}";
        return new(free, why, Automatic: true);
    }

    private static string Cores(int n) => n == 1 ? "1 physical core" : $"{n} physical cores";

    /// <summary>Physical cores: distinct (package, core) pairs in /proc/cpuinfo; the logical count where that is not readable.</summary>
    public static int PhysicalCores()
    {
        try
        {
            var cores = new HashSet<(string, string)>();
            string package = "0";
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                var (key, value) = Split(line);
                if (key == "physical id") package = value;
                else if (key == "core id") cores.Add((package, value));
            }
            if (cores.Count > 0) return cores.Count;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return Environment.ProcessorCount;
    }

    /// <summary>Processors /proc/cpuinfo lists (the host's, inside most containers); <see cref="Environment.ProcessorCount"/> where not readable.</summary>
    public static int HostProcessors()
    {
        try
        {
            int n = File.ReadLines("/proc/cpuinfo").Count(l => Split(l).Key == "processor");
            if (n > 0) return n;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return Environment.ProcessorCount;
    }

    /// <summary>The 1-minute load average (runnable and waiting tasks), or null where /proc/loadavg does not exist.</summary>
    public static double? LoadAverage()
    {
        try
        {
            var first = File.ReadAllText("/proc/loadavg").Split(' ', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault();
            return double.TryParse(first, NumberStyles.Float, C, out var v) ? v : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static (string Key, string Value) Split(string line)
    {
        int i = line.IndexOf(':');
        return i < 0 ? (line.Trim(), "") : (line[..i].Trim(), line[(i + 1)..].Trim());
    }
}
