using System.CommandLine;
using System.Globalization;
using LoopRpt.Checkpoints;
using LoopRpt.Cli.Models;
using LoopRpt.Hosting;
using LoopRpt.Inference;
using Microsoft.Extensions.Options;

namespace LoopRpt.Cli.Commands;

/// <summary>
/// <c>looprpt store publish | list | promote | rollback</c>: the hosting <see cref="ModelStore"/> (docs/hosting.md) from
/// the command line. Every verb binds to the store's own API (one store implementation, one writer lock across
/// processes); a <c>looprpt serve --store</c> following the store swaps to what these verbs promote.
/// </summary>
internal static class StoreCommand
{
    public static Command Create() => new("store", "Manage a versioned model store (docs/hosting.md): publish a model into it, list its versions, promote or roll back a version; `looprpt serve --store` follows it without a restart.")
    {
        PublishCommand(), ListCommand(), PromoteCommand(), RollbackCommand(),
    };

    /// <summary><c>--store</c>: the store directory.</summary>
    public static Option<string> StoreOption() => new("--store", "-s")
    {
        Description = "Model store directory (version folders v0001/, v0002/, ... and a 'current' pointer; docs/hosting.md).", Required = true,
    };

    private static Option<int> Keep() => new("--keep")
    {
        Description = "Versions kept on disk, the current one included; older ones are deleted after the publish.", DefaultValueFactory = _ => ModelStoreOptions.Defaults.KeepVersions,
    };

    private static Option<int?> Version(string description) => new("--version", "-v") { Description = description };

    private static Command PublishCommand()
    {
        var store = StoreOption();
        var model = CommonOptions.Model();
        var promote = new Option<bool>("--promote")
        {
            Description = "Point 'current' at the new version (servers following the store swap to it). Without it the version is only added, for a later `store promote`; the first version of an empty store is always current.",
        };
        var keep = Keep();
        var device = CommonOptions.Device();
        return CommonOptions.Verb("publish", "Save a LoopRpt model directory as the store's next version (created when absent), checked by loading it back.",
            [store, model, promote, keep, device], pr =>
            {
                var ctx = CliContext.Require();
                var root = StorePath(pr.GetRequiredValue(store), mustExist: false);
                var source = pr.GetRequiredValue(model);
                int versions = CommonOptions.AtLeast(pr.GetValue(keep), 1, "--keep");
                if (!Directory.Exists(source)) throw CliException.Input($"--model: directory '{source}' does not exist.");
                var dev = Devices.Resolve(pr.GetValue(device)!);
                using var opened = ModelOpener.Open(source, new ModelOpenOptions { Device = dev, RequireTokenizer = true });
                if (opened.Meta?.Tokenizer is null)
                    throw CliException.Model($"--model: '{opened.Directory}' has no tokenizer description in its meta.json; a store version opens with the tokenizer its meta.json " +
                                             "describes, so publish a LoopRpt model directory (`looprpt train` writes one).");
                using var target = Open(root, pr.GetValue(device)!, versions);
                int version = target.Publish(opened.Model, opened.Meta.Clone(), pr.GetValue(promote));
                ctx.Output.WriteLine($"store publish: {Name(version)} of {root} from {opened.Directory}; current {Name(target.PointedVersion())}");
                return ExitCodes.Success;
            });
    }

    private static Command ListCommand()
    {
        var store = StoreOption();
        return CommonOptions.Verb("list", "List the store's versions: which one is current, and each one's training step, tokens and held-out figures.", [store], pr =>
        {
            var ctx = CliContext.Require();
            using var target = Open(StorePath(pr.GetRequiredValue(store), mustExist: true));
            int current = target.PointedVersion();
            ctx.Output.WriteLine("version  current  created_utc           step  tokens_seen  holdout_loss  holdout_accuracy");
            foreach (int v in target.Versions())
            {
                var meta = ModelDirectory.ReadMeta(target.VersionDirectory(v));
                string Metric(string key) => meta.Metrics.TryGetValue(key, out var values) && values.Length > 0
                    ? values[^1].ToString("F4", CultureInfo.InvariantCulture) : "-";
                ctx.Output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{Name(v),-7}  {(v == current ? "*" : ""),-7}  {meta.CreatedUtc:yyyy-MM-ddTHH:mm:ssZ}  {meta.Step,4}  {meta.TokensSeen,11}  {Metric("holdout_loss"),12}  {Metric("holdout_accuracy"),16}"));
            }
            return ExitCodes.Success;
        });
    }

    private static Command PromoteCommand()
    {
        var store = StoreOption();
        var version = Version("The version to make current (see `store list`).");
        version.Required = true;
        return CommonOptions.Verb("promote", "Point the store's 'current' at a version it holds; servers following the store swap to it.", [store, version], pr =>
            Promote(pr.GetRequiredValue(store), pr.GetValue(version)!.Value, "promote"));
    }

    private static Command RollbackCommand()
    {
        var store = StoreOption();
        var version = Version("The version to go back to (default: the newest one older than the current).");
        return CommonOptions.Verb("rollback", "Make an older version current again; servers following the store swap back to it.", [store, version], pr =>
        {
            var root = StorePath(pr.GetRequiredValue(store), mustExist: true);
            if (pr.GetValue(version) is { } v) return Promote(root, v, "rollback");
            using var target = Open(root);
            int from = target.PointedVersion();
            int to;
            try
            {
                to = target.Rollback();
            }
            catch (InvalidOperationException e)
            {
                throw CliException.Input(e.Message, e);
            }
            CliContext.Require().Output.WriteLine($"store rollback: current {Name(to)} (was {Name(from)}) in {root}");
            return ExitCodes.Success;
        });
    }

    private static int Promote(string store, int version, string verb)
    {
        var root = StorePath(store, mustExist: true);
        CommonOptions.AtLeast(version, 1, "--version");
        using var target = Open(root);
        int from = target.PointedVersion();
        try
        {
            target.Promote(version);
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw CliException.Usage("--version: " + e.Message.Split(" (Parameter '")[0]);
        }
        CliContext.Require().Output.WriteLine($"store {verb}: current {Name(version)} (was {Name(from)}) in {root}");
        return ExitCodes.Success;
    }

    /// <summary>The store directory, full path; a file is a usage error, a missing directory an input error when it must exist.</summary>
    public static string StorePath(string store, bool mustExist)
    {
        if (string.IsNullOrWhiteSpace(store)) throw CliException.Usage("--store must name a directory.");
        var root = Path.GetFullPath(store);
        if (File.Exists(root)) throw CliException.Usage($"--store: '{store}' is a file, not a model store directory.");
        if (mustExist && !Directory.Exists(root)) throw CliException.Input($"--store: model store '{store}' does not exist; create it with `looprpt store publish --store {store} --model DIR`.");
        return root;
    }

    /// <summary>The store over <paramref name="root"/> (not serving: its verbs only write and read the disk).</summary>
    private static ModelStore Open(string root, string device = ModelStoreOptions.Defaults.Device, int keep = ModelStoreOptions.Defaults.KeepVersions)
        => new(Options.Create(new ModelStoreOptions { Root = root, Device = device, FallbackToCpu = false, KeepVersions = keep }), new ByteTokenizerService());

    private static string Name(int version) => version == 0 ? "none" : "v" + version.ToString("D4", CultureInfo.InvariantCulture);
}
