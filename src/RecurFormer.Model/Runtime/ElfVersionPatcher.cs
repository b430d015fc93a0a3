using System.Buffers.Binary;
using System.Text;

namespace RecurFormer.Model.Runtime;

/// <summary>
/// Marks one symbol-version requirement of an ELF64 shared library as weak (<c>VER_FLG_WEAK</c>), so that the
/// dynamic loader accepts the library when that version is missing from the system.
/// </summary>
/// <remarks>
/// Why: TorchSharp 0.107's <c>libLibTorchSharp.so</c> was linked with GCC 13 headers and asks for
/// <c>GLIBCXX_3.4.32</c>, which Debian 12's libstdc++ (GCC 12) lacks. The only symbol behind that version,
/// <c>std::ios_base_library_init()</c>, is referenced but never called, so a weak requirement is safe: glibc then
/// only warns (with LD_DEBUG) instead of refusing the library. We patch a private copy, never the original.
/// Layout used (System V gABI, "Symbol Versioning"): the section of type SHT_GNU_verneed holds a chain of
/// Elf64_Verneed records, each followed by a chain of Elf64_Vernaux records whose names live in the string
/// table that the section's sh_link names.
/// </remarks>
public static class ElfVersionPatcher
{
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    /// <summary>True if the library requires <paramref name="version"/> and the requirement is not already weak.</summary>
    public static bool RequiresStrongly(ReadOnlySpan<byte> elf, string version)
    {
        foreach (var offset in FindVernauxFlagOffsets(elf, version))
        {
            if ((BinaryPrimitives.ReadUInt16LittleEndian(elf[offset..]) & VerFlgWeak) == 0)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>Sets VER_FLG_WEAK on every requirement of <paramref name="version"/>; returns how many it changed.</summary>
    public static int MarkWeak(Span<byte> elf, string version)
    {
        var changed = 0;
        foreach (var offset in FindVernauxFlagOffsets(elf, version))
        {
            var flags = BinaryPrimitives.ReadUInt16LittleEndian(elf[offset..]);
            if ((flags & VerFlgWeak) == 0)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(elf[offset..], (ushort)(flags | VerFlgWeak));
                changed++;
            }
        }
        return changed;
    }

    /// <summary>File offsets of the <c>vna_flags</c> fields whose <c>vna_name</c> equals <paramref name="version"/>.</summary>
    private static List<int> FindVernauxFlagOffsets(ReadOnlySpan<byte> elf, string version)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
        {
            throw new InvalidDataException("not an ELF file");
        }
        if (elf[4] != 2 || elf[5] != 1)
        {
            throw new InvalidDataException("only little-endian ELF64 is supported");
        }

        var sectionHeaders = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(elf[0x28..]));
        var sectionHeaderSize = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3a..]);
        var sectionCount = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3c..]);
        var wanted = Encoding.ASCII.GetBytes(version);
        var found = new List<int>();

        for (var i = 0; i < sectionCount; i++)
        {
            var header = elf.Slice(sectionHeaders + i * sectionHeaderSize, sectionHeaderSize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(header[4..]) != ShtGnuVerneed)
            {
                continue;
            }
            var sectionOffset = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(header[0x18..]));
            var stringTableIndex = (int)BinaryPrimitives.ReadUInt32LittleEndian(header[0x28..]);
            var recordCount = (int)BinaryPrimitives.ReadUInt32LittleEndian(header[0x2c..]); // sh_info = number of Verneed records
            var stringHeader = elf.Slice(sectionHeaders + stringTableIndex * sectionHeaderSize, sectionHeaderSize);
            var strings = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(stringHeader[0x18..]));

            var verneed = sectionOffset;
            for (var n = 0; n < recordCount; n++)
            {
                var auxCount = BinaryPrimitives.ReadUInt16LittleEndian(elf[(verneed + 2)..]);
                var vernaux = verneed + (int)BinaryPrimitives.ReadUInt32LittleEndian(elf[(verneed + 8)..]);
                for (var a = 0; a < auxCount; a++)
                {
                    var name = strings + (int)BinaryPrimitives.ReadUInt32LittleEndian(elf[(vernaux + 8)..]);
                    var end = elf[name..].IndexOf((byte)0);
                    if (elf.Slice(name, end).SequenceEqual(wanted))
                    {
                        found.Add(vernaux + 4);
                    }
                    vernaux += (int)BinaryPrimitives.ReadUInt32LittleEndian(elf[(vernaux + 12)..]);
                }
                verneed += (int)BinaryPrimitives.ReadUInt32LittleEndian(elf[(verneed + 12)..]);
            }
        }
        return found;
    }
}
